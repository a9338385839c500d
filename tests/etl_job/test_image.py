"""The job's image recipe: only the job's own files go in, and it runs as the stack expects.

That no key file reaches the build context or the image is tested on the real asset staging, in
tests/stacks/test_no_secrets.py.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).resolve().parents[2] / "etl_job"


def test_dockerfile_copies_only_python_modules_and_runs_as_the_stack_expects():
    dockerfile = (JOB / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert all(" . " not in line and not line.endswith(" .") for line in copies)
    assert "COPY *.py etl_job/" in copies
    assert "USER 10001:10001" in dockerfile
    assert "HEALTHCHECK NONE" in dockerfile
    assert 'CMD ["python", "-m", "etl_job"]' in dockerfile
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile
    assert all("slim-bookworm" in line and ":latest" not in line for line in dockerfile.splitlines()
               if line.startswith("FROM"))


def test_the_job_package_is_flat_so_copying_its_py_files_copies_all_of_it():
    assert [p.name for p in JOB.iterdir() if p.is_dir() and p.name != "__pycache__"] == []


HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(not HADOLINT, reason="hadolint not installed")
def test_hadolint_is_clean():
    done = subprocess.run([HADOLINT, str(JOB / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
