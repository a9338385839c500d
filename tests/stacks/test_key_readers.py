"""The audit report's "Who can read the key" names every principal and route, and the README says the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev.key_readers import key_readers
from tests.support import audited_template, task_definition

README = Path(__file__).resolve().parents[2] / "README.md"
# Every call that reads the key or leads to it (issue 14, finding 1): each must be in the report and the README.
ROUTES = (
    "secretsmanager:GetSecretValue", "kms:Decrypt", "ecs:RunTask", "ecs:StartTask", "iam:PassRole",
    "events:PutTargets", "events:PutRule", "ecs:RegisterTaskDefinition", "PutResourcePolicy", "DeleteResourcePolicy",
    "kms:PutKeyPolicy", "UpdateAssumeRolePolicy", "make run-now", "TaskDefinitionArn",
)


def report(name: str) -> str:
    t = audited_template(name)
    return "\n".join(key_readers(t, {}))


@pytest.mark.parametrize("name", ["dev", "dev-spot-kms", "dev-existing-vpc", "dev-shards"])
def test_every_route_to_the_key_is_in_the_report(name: str) -> None:
    text = report(name)
    t = audited_template(name)
    _, definition = task_definition(t)
    assert definition["ExecutionRoleArn"]["Fn::GetAtt"][0] in text
    missing = [route for route in ROUTES if route not in text and not (route == "kms:Decrypt" and name == "dev-existing-vpc")]
    assert missing == []


def test_the_report_says_who_else_reads_directly() -> None:
    assert "no one else: the secret's resource policy denies" in report("dev")
    assert "the break-glass role `arn:aws:iam::123456789012:role/security/break-glass`" in report("dev-spot-kms")
    assert "denies `kms:Decrypt`" in report("dev-spot-kms")
    assert "any principal of the account whose IAM policies allow" in report("dev-existing-vpc")
    assert "No Google key exists" in report("dev-wif")


def test_the_readme_has_the_same_section() -> None:
    text = README.read_text()
    section = text.split("### Who can read the key", 1)[1].split("\n## ", 1)[0]
    assert [route for route in ROUTES if route not in section] == []
    assert "SCPs or permission policies should deny" in section
