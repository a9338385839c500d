"""The job's image recipe, without Docker: the folder it copies and hadolint.

The built image itself (its user, volume, command, files, and the job run as the task definition
runs it) is tested in tests/integration/test_image.py; that no key file reaches the build context
or the image, on the real asset staging in tests/stacks/test_no_secrets.py.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).resolve().parents[2] / "etl_job"


def test_the_job_package_is_flat_so_copying_its_py_files_copies_all_of_it():
    assert [p.name for p in JOB.iterdir() if p.is_dir() and p.name != "__pycache__"] == []


HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(not HADOLINT, reason="hadolint not installed")
def test_hadolint_is_clean():
    done = subprocess.run([HADOLINT, str(JOB / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
