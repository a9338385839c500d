"""No overlapping runs: the real job process against a local ECS API (moto) and a local task-metadata endpoint."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pytest

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

    yield Ecs
    server.shutdown()
    server.server_close()


def test_the_newer_run_skips_with_exit_5_without_touching_data(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.newer))

    assert done.returncode == 5, done.stderr
    assert "another run of this job is still going; skipping this one" in done.stderr
    assert ecs.older in done.stderr
    assert [t.table_id for t in job.client.list_tables(job.dataset)] == ["source"]


def test_the_older_run_goes_ahead(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.older))

    assert done.returncode == 0, done.stderr
    assert "it will skip" in done.stderr
    assert job.count() == 10


def test_a_run_alone_goes_ahead(job, ecs):
    job.seed(10)
    ecs.stop(ecs.older)

    done = job.run(**ecs.env(me=ecs.newer))

    assert done.returncode == 0, done.stderr
    assert job.count() == 10


def test_an_unreachable_ecs_api_fails_open_with_a_warning(job, ecs):
    job.seed(10)

    done = job.run(**ecs.env(me=ecs.newer, endpoint=f"http://127.0.0.1:{_free_port()}"))

    assert done.returncode == 0, done.stderr
    warning = next(json.loads(line) for line in done.stderr.splitlines() if "overlapping run" in line)
    assert warning["level"] == "WARNING" and warning["overlap_check"] == "failed"
    assert warning["needs_iam_actions"] == ["ecs:ListTasks", "ecs:DescribeTasks"]
    assert job.count() == 10
