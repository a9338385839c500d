"""The job's image, built with Docker and run as the task definition runs it on Fargate.

Stand-in: the base image is built from Debian bookworm's packages (Python 3.11.2) by `make image`,
since no image registry is reachable here; the Dockerfile names python:3.11.13-slim-bookworm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from dev.image import DOCKER
from tests.support import FAKE_KEY, KEY_FILES, KEY_MARKER, expected_rows

JOB_DIR = Path(__file__).resolve().parents[2] / "etl_job"
# Test code the container runs (a probe, a transform), mounted read-only: it is not part of the image.
IN_CONTAINER = Path(__file__).resolve().parent / "in_container"
MOUNT_TARGET = "/opt/tests"
TEST_CODE = f"type=bind,source={IN_CONTAINER},target={MOUNT_TARGET},readonly"


def probe(fargate, **kwargs) -> dict:
    """What a process in the container sees (tests/integration/in_container/probe.py)."""
    command = ("python", f"{MOUNT_TARGET}/probe.py", fargate.container.scratch_path)
    done = fargate.run(*command, mounts=[TEST_CODE], **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def seen(fargate) -> dict:
    """What a process in the container sees, run as the task definition runs it (one container for several tests)."""
    return probe(fargate)


def test_the_image_declares_what_the_task_definition_relies_on(fargate, task_container):
    config = fargate.config
    assert config["User"] == task_container.user  # the image alone runs as the task does
    assert task_container.scratch_path in config["Volumes"]  # so Fargate fills the scratch volume from the image
    assert config["Cmd"] == ["python", "-m", "etl_job"]
    assert config["Healthcheck"]["Test"] == ["NONE"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", f"HOME={task_container.scratch_path}"} <= set(
        config["Env"]
    )


def test_the_image_holds_all_of_the_jobs_modules_and_packages_and_nothing_else(seen):
    # A package under etl_job/ counts too: the Dockerfile's `COPY *.py` would leave it out.
    job = [p.name for p in JOB_DIR.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    assert seen["job_files"] == sorted([*job, "__pycache__"])


def test_the_process_runs_as_the_task_definitions_user_and_group_never_group_0(seen, task_container):
    uid, _, gid = task_container.user.partition(":")
    assert seen["gid"] != 0 and 0 not in seen["groups"], f"group 0 as user {task_container.user!r}: {seen}"
    # Named in the task definition, so the group does not hang on the image's /etc/passwd.
    assert gid, f"the task definition's user {task_container.user!r} names no group"
    assert (seen["uid"], seen["gid"], seen["groups"]) == (int(uid), int(gid), [int(gid)])
    assert seen["user"] == seen["group"] == "etl"  # the image creates the user and group
    assert seen["home"] == task_container.scratch_path


def test_the_scratch_volume_as_fargate_mounts_it_takes_temp_files_and_the_root_stays_read_only(seen, task_container):
    assert seen["scratch"] == [seen["uid"], seen["gid"], "0o700"]  # the process's own, as the image made it
    assert seen["temp_file"].startswith(f"ok:{task_container.scratch_path}/")
    assert seen["home_file"] == "ok"
    assert seen["root_file"] == "OSError"  # EROFS: a read-only root filesystem


def test_without_the_volume_declaration_fargate_s_root_owned_0755_scratch_refuses_temp_files(fargate):
    """What the image got on Fargate before it declared /tmp a VOLUME: proof the test above can fail."""
    seen = probe(fargate, declared=False)
    assert seen["scratch"] == [0, 0, "0o755"]
    assert seen["temp_file"] == "FileNotFoundError"  # tempfile finds no usable directory
    assert seen["home_file"] == "PermissionError"


def test_the_image_runs_the_job_exactly_with_a_transform_that_writes_temp_files(fargate, job):
    job.seed(300)
    env = {**_local(job), "ETL_TRANSFORM": "scratch_transform:transform", "PYTHONPATH": MOUNT_TARGET}

    done = fargate.run(env=env, mounts=[TEST_CODE])

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    end = json.loads(done.stderr.splitlines()[-1])
    assert end["message"] == "job finished" and end["rows_loaded"] == 300 and end["exit_code"] == 0
    rows = job.rows()
    assert [{k: r[k] for k in ("id", "name", "score", "created_at")} for r in rows] == expected_rows(300, with_created_at=True)
    assert {r["run_id"] for r in rows} == {end["run_id"]} and all(r["processed_at"] for r in rows)
    assert job.count(job.errors) == 0


def test_a_failing_run_in_the_image_is_one_clear_error_line(fargate, job):
    done = fargate.run(env=_local(job))

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (error,) = [e for e in map(json.loads, done.stderr.splitlines()) if e["level"] == "ERROR"]
    assert f"source table {job.source} does not exist (ETL_SOURCE_TABLE)" in error["message"]


def _local(job) -> dict[str, str]:
    """The environment that points the task definition's container at the test's dataset in the local BigQuery."""
    return {
        "BIGQUERY_EMULATOR_HOST": job.url,
        "ETL_SOURCE_TABLE": job.source,
        "ETL_DESTINATION_TABLE": job.destination,
        "NO_GCE_CHECK": "True",  # google.auth: do not probe for a GCE metadata server
    }


def _build(tag: str, context: Path) -> str:
    done = subprocess.run([DOCKER, "build", "--network", "host", "-t", tag, str(context)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tag


def _files_with_a_key(image: str) -> list[str]:
    """Every file of the image (all layers, as a container's export gives them) named like a key or holding the fake one."""
    created = subprocess.run([DOCKER, "create", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        export = subprocess.Popen([DOCKER, "export", created], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            found = [m.name for m in tar if m.isfile() and (
                Path(m.name).name in KEY_FILES or KEY_MARKER.encode() in tar.extractfile(m).read())]
        assert export.wait() == 0
        return found
    finally:
        subprocess.run([DOCKER, "rm", "--force", created], capture_output=True)
        subprocess.run([DOCKER, "rmi", image], capture_output=True)  # only the tag when nothing changed


@pytest.mark.parametrize("dockerignore", [True, False], ids=["with-dockerignore", "without-dockerignore"])
def test_key_files_beside_the_job_never_reach_the_image(image, tmp_path, dockerignore):
    """etl_job/ with a key saved where a tutorial says, built as the stack builds it (cached layers: seconds).

    Without its .dockerignore too: the Dockerfile alone must not copy a key in.
    """
    context = tmp_path / "etl_job"
    shutil.copytree(JOB_DIR, context, ignore=shutil.ignore_patterns("__pycache__", *KEY_FILES))
    for name in KEY_FILES:
        (context / name).write_text(FAKE_KEY)
    if not dockerignore:
        (context / ".dockerignore").unlink()

    assert _files_with_a_key(_build(f"etl-test-keys-{uuid.uuid4().hex[:12]}", context)) == []


def test_the_image_check_finds_a_key_that_does_reach_the_image(image, tmp_path):
    """The check above can fail: an image that copies the key in."""
    (tmp_path / KEY_FILES[0]).write_text(FAKE_KEY)
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nCOPY {KEY_FILES[0]} /app/etl_job/\n")

    leaky = _build(f"etl-test-leaky-{uuid.uuid4().hex[:12]}", tmp_path)

    assert _files_with_a_key(leaky) == [f"app/etl_job/{KEY_FILES[0]}"]
