"""Integration tests: the job's image built and run with Docker, and the stack's integrations on a local AWS.

Every test under this folder is marked ``integration``: `make integration` runs them, `make test` does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev.image import DOCKER, SetupError, ensure_image
from tests.support import synth

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class TaskContainer:
    """What the synthesized task definition tells Fargate about the job's container."""

    user: str  # as in the task definition: "uid" or "uid:gid"
    read_only_root: bool
    scratch_path: str  # where the task-storage (bind mount) volume is mounted
    environment: dict[str, str]

    @classmethod
    def from_template(cls, template: dict) -> TaskContainer:
        (definition,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
        (container,) = definition["ContainerDefinitions"]
        # Fargate task storage: a volume with no host path, Docker volume or EFS configuration.
        bind_mounts = {v["Name"] for v in definition["Volumes"] if set(v) == {"Name"}}
        (scratch,) = [m["ContainerPath"] for m in container["MountPoints"] if m["SourceVolume"] in bind_mounts]
        return cls(
            user=container["User"],
            read_only_root=container["ReadonlyRootFilesystem"],
            scratch_path=scratch,
            environment={e["Name"]: e["Value"] for e in container["Environment"]},
        )


class Fargate:
    """Runs the image with Docker the way Fargate runs the task definition's container.

    Same user (and group, if the task definition names one), read-only root filesystem, host network
    (to reach the local BigQuery), and the scratch volume as Fargate mounts it: Fargate fills a task
    bind mount from the image when the image declares its path a VOLUME, else mounts it empty,
    root:root 0755 (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/bind-mounts.html).
    A Docker volume is filled from the image the same way; an empty host directory stands in for the other.
    Limit: Docker copies the directory's owner and mode into the volume; the ECS guide shows Fargate keeping
    the owner the image sets (its example only chowns the directory) and does not state the mode, so the
    image relies on the owner alone (owner-writable in either mode).
    """

    def __init__(self, image: str, container: TaskContainer, host_dirs: Path) -> None:
        self.image = image
        self.container = container
        self._host_dirs = host_dirs
        inspect = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True, text=True, check=True)
        self.config = json.loads(inspect.stdout)[0]["Config"]

    def scratch_mount(self, *, declared: bool | None = None) -> str:
        """The --mount for the scratch volume; ``declared`` overrides whether the image declares it a VOLUME."""
        if declared is None:
            declared = self.container.scratch_path in (self.config.get("Volumes") or {})
        if declared:
            return f"type=volume,target={self.container.scratch_path}"  # anonymous: removed with the container
        empty = Path(tempfile.mkdtemp(dir=self._host_dirs))
        os.chown(empty, 0, 0)
        empty.chmod(0o755)
        return f"type=bind,source={empty},target={self.container.scratch_path}"

    def run(
        self, *command: str, env: Mapping[str, str] | None = None, mounts: Iterable[str] = (),
        declared: bool | None = None, timeout: float = 180,
    ) -> subprocess.CompletedProcess:
        """``docker run`` the image (its CMD unless ``command``) with the task definition's environment plus ``env``."""
        name = f"etl-test-{uuid.uuid4().hex[:12]}"
        args = [DOCKER, "run", "--rm", "--name", name, "--network", "host", "--user", self.container.user]
        if self.container.read_only_root:
            args.append("--read-only")
        for mount in [self.scratch_mount(declared=declared), *mounts]:
            args += ["--mount", mount]
        for key, value in {**self.container.environment, **(env or {})}.items():
            args += ["--env", f"{key}={value}"]
        try:
            return subprocess.run([*args, self.image, *command], capture_output=True, text=True, timeout=timeout)
        finally:
            subprocess.run([DOCKER, "rm", "--force", name], capture_output=True)


@pytest.fixture(scope="session")
def image() -> str:
    """The job's image, built from etl_job/ as `make image` builds it (cached: seconds when nothing changed)."""
    try:
        return ensure_image()
    except SetupError as error:
        pytest.fail(f"make image: {error}", pytrace=False)


@pytest.fixture(scope="session")
def task_container() -> TaskContainer:
    """The dev stage's job container, read from the synthesized template."""
    return TaskContainer.from_template(synth().to_json())


@pytest.fixture(scope="session")
def fargate(image: str, task_container: TaskContainer, tmp_path_factory: pytest.TempPathFactory) -> Fargate:
    """Runs the job's image as Fargate runs the dev stage's task definition."""
    return Fargate(image, task_container, tmp_path_factory.mktemp("fargate"))


@pytest.fixture(scope="session")
def local_aws():
    """LocalStack (dev/local_aws.py) for the whole session, started and stopped by the tests themselves."""
    from dev.local_aws import LocalAws

    with LocalAws() as aws:
        yield aws
