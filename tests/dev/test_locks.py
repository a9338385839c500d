"""Locked dependencies: every lock matches its input file (offline), and a stale one is named with the fix."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dev.image import base_image
from dev.locks import IMAGE, LOCKS, ROOT, problems

FILES = sorted({path for lock in LOCKS for path in (lock.input, lock.output)})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's inputs and locks, to make stale."""
    for path in FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, tmp_path / path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_every_lock_matches_its_input():
    done = subprocess.run([sys.executable, "-m", "dev.locks", "check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_the_copy_is_current(tree):
    assert problems(tree) == []


def test_a_package_added_to_an_input_but_not_locked_is_named(tree):
    edit(tree / IMAGE.input, "boto3==1.44.8\n", "boto3==1.44.8\nrich==14.0.0\n")
    assert problems(tree) == [
        f"{IMAGE.output}: {IMAGE.input} asks for rich==14.0.0, the lock pins nothing",
        f"requirements-dev.txt: {IMAGE.input} asks for rich==14.0.0, the lock pins nothing",
    ]


def test_a_changed_version_is_named_in_every_lock_compiled_from_it(tree):
    edit(tree / "requirements-dev.in", "pytest==9.2.0", "pytest>=9.3")
    assert problems(tree) == ["requirements-dev.txt: requirements-dev.in asks for pytest>=9.3, the lock pins pytest==9.2.0"]


def test_a_package_dropped_from_an_input_is_named(tree):
    edit(tree / "requirements-checkov.in", "checkov==", "# checkov==")
    assert problems(tree) == [
        "requirements-checkov.txt: pins checkov as a direct requirement, which requirements-checkov.in no longer asks for"
    ]


def test_a_changed_extra_is_named(tree):
    edit(tree / "requirements-dev.in", "moto[server]", "moto[server,s3]")
    assert problems(tree) == [
        "requirements-dev.txt: requirements-dev.in asks for moto[s3,server]==5.2.5, the lock pins moto[server]==5.2.5"
    ]


def test_a_pin_without_hashes_is_named(tree):
    lock = tree / IMAGE.output
    lock.write_text(re.sub(r"(boto3==[^\n]*?) \\\n(    --hash=[^\n]*\n)+", r"\1\n", lock.read_text()))
    assert problems(tree) == [f"{IMAGE.output}: boto3 has no hashes"]


def test_locks_sharing_the_dev_environment_must_agree_on_versions(tree):
    edit(tree / IMAGE.output, "\ntyping-extensions==4.16.0 ", "\ntyping-extensions==4.15.0 ")  # pulled in, named in no input
    assert problems(tree) == [
        f"requirements.txt pins typing-extensions ['4.16.0'], {IMAGE.output} ['4.15.0']",
        f"requirements-dev.txt pins typing-extensions ['4.16.0'], {IMAGE.output} ['4.15.0']",
    ]


def test_the_base_image_digest_in_the_dockerfile_is_for_the_image_it_builds_from():
    pinned = re.findall(r"^#\s+(\S+)@sha256:[0-9a-f]{64}$", (ROOT / "etl_job" / "Dockerfile").read_text(), re.MULTILINE)
    assert pinned == [base_image()]
