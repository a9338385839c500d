"""The job's image recipe, without Docker: hadolint.

The built image itself (its user, volume, command, files, that no key beside the job reaches it,
and the job run as the task definition runs it) is tested in tests/integration/test_image.py; that no
key file reaches the staged asset, in tests/stacks/test_no_secrets.py.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).resolve().parents[2] / "etl_job"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(not HADOLINT, reason="hadolint not installed")
def test_hadolint_is_clean():
    done = subprocess.run([HADOLINT, str(JOB / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
