"""cdk-nag runs on every synth: a new finding, or a dropped acknowledgment, fails it."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

import stacks.nag
from app import build
from tests.support import CDK_JSON_CONTEXT, build_config

MODULES = ("stacks.job", "stacks.network", "stacks.schedule", "stacks.pipeline_stack", "stacks.fanout")


def synth_with(change=None, **config) -> None:
    app = cdk.App(context={**CDK_JSON_CONTEXT, **config})
    stack = build(app, build_config(**config))
    if change:
        change(stack)
    Template.from_stack(stack)


def test_the_stack_passes_with_its_acknowledgments() -> None:
    synth_with()


def test_a_new_unacknowledged_finding_fails_synth() -> None:
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        synth_with(lambda stack: sqs.Queue(stack, "QueueWithoutSslOrDlq"))


@pytest.mark.parametrize(
    ("rule", "config"),
    [(rule, {}) for rule in ["SMG4", "ECS2", "VPC7", "ECS4", "SQS3", "IAM5[Resource::*]"]]
    + [("SF2", {"shards": "8"})],
)
def test_dropping_an_acknowledgment_fails_synth(monkeypatch: pytest.MonkeyPatch, rule: str, config: dict) -> None:
    real = stacks.nag.acknowledge

    def all_but_one(construct, acknowledged: str, reason: str) -> None:
        if acknowledged != rule:
            real(construct, acknowledged, reason)

    for module in MODULES:
        monkeypatch.setattr(f"{module}.acknowledge", all_but_one)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        synth_with(**config)


@pytest.mark.parametrize("config", [{}, {"shards": "8"}])
def test_every_acknowledgment_gives_a_real_reason(monkeypatch: pytest.MonkeyPatch, config: dict) -> None:
    seen: list[tuple[str, str]] = []
    real = stacks.nag.acknowledge

    def record(construct, rule: str, reason: str) -> None:
        seen.append((rule, reason))
        real(construct, rule, reason)

    for module in MODULES:
        monkeypatch.setattr(f"{module}.acknowledge", record)
    synth_with(**config)
    assert len(seen) >= 7
    for rule, reason in seen:
        assert len(reason) > 80 and "not needed" not in reason.lower(), rule
