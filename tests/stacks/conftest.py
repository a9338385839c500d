"""Synthesize each configuration once per test session, however many tests read it, with cdk-nag on."""

from __future__ import annotations

import functools
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import build
from stacks import config as stage_config

CDK_JSON_CONTEXT = stage_config.read_cdk_json_context()


def build_config(**overrides: Any) -> stage_config.StageConfig:
    """The config app.py would build from cdk.json plus ``-c key=value`` overrides."""
    return stage_config.load({**CDK_JSON_CONTEXT, **overrides})


@functools.cache
def _synth(overrides: tuple[tuple[str, Any], ...]) -> Template:
    app = cdk.App(context={**CDK_JSON_CONTEXT, **dict(overrides)})
    stack = build(app, build_config(**dict(overrides)))  # as app.py does: cdk-nag runs in from_stack
    return Template.from_stack(stack)


def synth(**overrides: Any) -> Template:
    """The template of the stack for cdk.json's defaults plus ``overrides``; cached per configuration."""
    return _synth(tuple(sorted(overrides.items())))


@pytest.fixture(scope="session")
def dev() -> Template:
    return synth()


@pytest.fixture(scope="session")
def prod() -> Template:
    return synth(stage="prod")
