"""Confused-deputy conditions on the roles AWS services assume, where AWS documents that the service sends them.

- Task role, trusted by ecs-tasks.amazonaws.com: aws:SourceAccount and an aws:SourceArn of ECS in this account
  (Amazon ECS developer guide, "Amazon ECS task IAM role", trust policy example).
- Events role, trusted by events.amazonaws.com: aws:SourceArn is the schedule rule, aws:SourceAccount this account
  (Amazon EventBridge user guide, "Cross-service confused deputy prevention").
- Execution role: the ECS developer guide's "Amazon ECS task execution IAM role" gives its trust policy without
  source conditions, so none is added: a condition ECS does not send would stop every task from starting.
- The alert topic's policy and its key policy (EventBridge and CloudWatch publishing) are written in
  stacks/alerts.py and checked with the other producer -> consumer pairs there.
"""

from __future__ import annotations

import pytest

from dev.audit_configurations import CONFIGURATIONS
from dev.key_readers import statements
from tests.support import audited_template, resources_of, role_of, task_definition

ACCOUNT = {"Ref": "AWS::AccountId"}
ECS_OF_THIS_ACCOUNT = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":ecs:", {"Ref": "AWS::Region"}, ":", ACCOUNT, ":*"]]}


def trust(t: dict, role_id: str) -> list[dict]:
    return statements(t["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"])


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_task_role_trusts_only_ecs_tasks_of_this_account(name: str) -> None:
    t = audited_template(name)
    _, definition = task_definition(t)
    (statement,) = trust(t, definition["TaskRoleArn"]["Fn::GetAtt"][0])
    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": ECS_OF_THIS_ACCOUNT},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_events_role_trusts_only_the_schedule_rule(name: str) -> None:
    t = audited_template(name)
    schedules = [r for r in resources_of(t, "AWS::Events::Rule").values() if "ScheduleExpression" in r["Properties"]]
    (rule,) = schedules
    rule_arn = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":events:", {"Ref": "AWS::Region"}, ":", ACCOUNT,
                                  f":rule/{rule['Properties']['Name']}"]]}
    (role_id,) = role_of(t, "events.amazonaws.com")
    (statement,) = trust(t, role_id)
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert rule["Properties"]["Targets"][0]["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_the_execution_role_trust_is_as_aws_documents_it() -> None:
    t = audited_template("dev")
    _, definition = task_definition(t)
    (statement,) = trust(t, definition["ExecutionRoleArn"]["Fn::GetAtt"][0])
    assert statement == {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}}
