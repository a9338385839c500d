"""No overlapping runs: the real job process against a local ECS API (moto) and a local task-metadata endpoint."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pytest

from etl_job import contract
from etl_job.overlap import shards_overlap

FAMILY = "etl-job"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ecs_endpoint():
    """A local ECS API (moto server) on a free port."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class _Metadata(BaseHTTPRequestHandler):
    task: dict = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(self.task).encode()
        status = 200 if self.path == "/v4/task" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body if status == 200 else b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ecs(ecs_endpoint):
    """A cluster with two running tasks of the job's family, and a metadata endpoint for one of them."""
    client = boto3.client("ecs", endpoint_url=ecs_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    cluster = client.create_cluster(clusterName=f"etl-{_free_port()}")["cluster"]["clusterArn"]
    client.register_task_definition(
        family=FAMILY, networkMode="bridge", containerDefinitions=[{"name": "job", "image": "job", "memory": 512}]
    )
    tasks = sorted(
        client.run_task(cluster=cluster, taskDefinition=FAMILY, launchType="FARGATE", count=2)["tasks"],
        key=lambda t: (t.get("createdAt") or 0, t["taskArn"]),
    )
    server = HTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Ecs:
        older, newer = tasks[0]["taskArn"], tasks[1]["taskArn"]

        @staticmethod
        def env(me: str, endpoint: str = ecs_endpoint) -> dict:
            _Metadata.task = {"Cluster": cluster, "TaskARN": me, "Family": FAMILY}
            return {
                **AWS,
                "ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_port}/v4",
                "AWS_ENDPOINT_URL_ECS": endpoint,
            }

        @staticmethod
        def stop(arn: str) -> None:
            client.stop_task(cluster=cluster, task=arn, reason="test")

        @staticmethod
        def start(shard: tuple[int, int] | None, after: str = "") -> str:
            """Run one more task, with the fan-out's container overrides for ``shard`` (None: none), ordered
            after task ``after``: moto gives tasks no creation time, so the job orders them by ARN."""
            environment = [] if shard is None else [
                {"name": contract.SHARD_INDEX, "value": str(shard[0])},
                {"name": contract.SHARD_COUNT, "value": str(shard[1])},
            ]
            overrides = {"containerOverrides": [{"name": "job", "environment": environment}]}
            while True:
                (task,) = client.run_task(cluster=cluster, taskDefinition=FAMILY, launchType="FARGATE",
                                          overrides=overrides)["tasks"]
                if task["taskArn"] > after:
                    return task["taskArn"]
                client.stop_task(cluster=cluster, task=task["taskArn"], reason="test: ordered before the other")

    yield Ecs
    server.shutdown()
    server.server_close()


def test_the_newer_run_skips_with_exit_5_without_touching_data(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.newer))

    assert done.returncode == 5, done.stderr
    assert "another run of this job is still going; skipping this one" in done.stderr
    assert ecs.older in done.stderr
    # The fields the stack's metric filters count: one skip, one run loading (the older one).
    assert _metric_fields(done.stderr) == {"Stage": "test", "SkippedRun": 1, "ConcurrentRuns": 1}
    assert [t.table_id for t in job.client.list_tables(job.dataset)] == ["source"]


def test_the_older_run_goes_ahead(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.older))

    assert done.returncode == 0, done.stderr
    assert "it will skip" in done.stderr
    assert _metric_fields(done.stderr) == {"Stage": "test", "SkippedRun": 0, "ConcurrentRuns": 1}
    assert job.count() == 10


def test_a_run_alone_goes_ahead(job, ecs):
    job.seed(10)
    ecs.stop(ecs.older)

    done = job.run(**ecs.env(me=ecs.newer))

    assert done.returncode == 0, done.stderr
    assert _metric_fields(done.stderr) == {"Stage": "test", "SkippedRun": 0, "ConcurrentRuns": 1}
    assert job.count() == 10


def _metric_fields(stderr: str) -> dict:
    """The metric fields of the one log line that carries them (stacks/alerts.py turns them into metrics)."""
    (line,) = [json.loads(line) for line in stderr.splitlines() if '"SkippedRun"' in line]
    return {key: line[key] for key in ("Stage", "SkippedRun", "ConcurrentRuns")}


def test_an_unreachable_ecs_api_fails_open_with_a_warning(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.newer, endpoint=f"http://127.0.0.1:{_free_port()}"))

    assert done.returncode == 0, done.stderr
    warning = next(json.loads(line) for line in done.stderr.splitlines() if "overlapping run" in line)
    assert warning["level"] == "WARNING" and warning["overlap_check"] == "failed"
    assert warning["needs_iam_actions"] == ["ecs:ListTasks", "ecs:DescribeTasks"]
    assert job.count() == 10


@pytest.mark.parametrize(
    ("running", "mine", "skips"),
    [
        ((0, 8), (1, 8), False),  # the other shards of the same execution run side by side
        ((3, 8), (3, 8), True),  # the same shard of an older execution is still going
        (None, (3, 8), True),  # an older unsharded run covers every key
        ((3, 8), None, True),  # and an unsharded run covers this shard's keys
        ((1, 4), (5, 8), True),  # shard count changed: 5 mod 8 keys are 1 mod 4 keys
        ((1, 4), (2, 8), False),  # 2 mod 8 keys are 2 mod 4 keys, never 1 mod 4
    ],
)
def test_only_an_older_task_on_the_same_keys_makes_a_shard_skip(job, ecs, running, mine, skips):
    job.seed(40)
    ecs.stop(ecs.older)
    ecs.stop(ecs.newer)
    older = ecs.start(running)
    me = ecs.start(mine, after=older)
    shard = {} if mine is None else {contract.SHARD_INDEX: str(mine[0]), contract.SHARD_COUNT: str(mine[1])}

    done = job.run(**ecs.env(me=me), **shard)

    assert done.returncode == (5 if skips else 0), done.stderr
    assert (older in done.stderr) == skips
    touched = [t.table_id for t in job.client.list_tables(job.dataset)] != ["source"]
    assert touched != skips


def test_shards_overlap_exactly_when_some_key_can_hash_into_both():
    for a_count in range(1, 13):
        for b_count in range(1, 13):
            for a in range(a_count):
                for b in range(b_count):
                    shared = any(h % a_count == a and h % b_count == b for h in range(a_count * b_count))
                    assert shards_overlap((a, a_count), (b, b_count)) == shared
