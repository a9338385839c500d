"""The dev and prod templates, synthesized once per session (tests.support.synth caches every configuration)."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from tests.support import synth


@pytest.fixture(scope="session")
def dev() -> Template:
    return synth()


@pytest.fixture(scope="session")
def prod() -> Template:
    return synth(stage="prod")
