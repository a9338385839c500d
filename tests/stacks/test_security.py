"""Least privilege, read from the synthesized templates of every audited configuration.

The rules are checked over every IAM role, policy and resource policy in the template, so they keep
holding as resources are added; each check returns its violations, and the last tests prove the
checks catch a bad statement.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dev.audit_configurations import CONFIGURATIONS
from dev.key_readers import as_list, statements
from dev.permissions import IDENTITY_POLICIES, RESOURCE_POLICIES
from tests.support import audited_template, resources_of, role_of, synth, task_definition

ETL_JOB_DIR = Path(__file__).resolve().parents[2] / "etl_job"

# Property names that mean "this resource carries permissions": a type holding one must be checked here.
_POLICY_PROPERTIES = {"PolicyDocument", "KeyPolicy", "ResourcePolicy", "RepositoryPolicyText", "Policies", "AssumeRolePolicyDocument"}
# Actions that take no resource ARN: AWS requires "*" as their resource. The logs:* ones are CloudWatch Logs'
# log-delivery actions a state machine's role needs to deliver its execution log (Step Functions
# developer guide, "IAM policies for logging to CloudWatch Logs").
NO_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken",
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}
# What ECS needs to start the task: pull the image, write its logs, read its secret.
EXECUTION_ROLE_ACTIONS = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:GetAuthorizationToken",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
}
EVENTS_ROLE_ACTIONS = {"ecs:RunTask", "iam:PassRole", "ecs:TagResource"}
TASK_ROLE_ACTIONS = {"ecs:ListTasks", "ecs:DescribeTasks"}

Template = dict[str, Any]
Statement = dict[str, Any]


def role_statements(template: Template) -> dict[str, list[Statement]]:
    """Role logical id -> every statement its inline and attached policies grant."""
    roles = resources_of(template, "AWS::IAM::Role")
    granted: dict[str, list[Statement]] = {role_id: [] for role_id in roles}
    for role_id, role in roles.items():
        for policy in role["Properties"].get("Policies", []):
            granted[role_id] += statements(policy["PolicyDocument"])
    for policy in resources_of(template, *IDENTITY_POLICIES).values():
        for role in policy["Properties"].get("Roles", []):
            granted[role["Ref"]] += statements(policy["Properties"]["PolicyDocument"])
    return granted


def identity_statements(template: Template) -> list[tuple[str, Statement]]:
    found = [(role_id, s) for role_id, granted in role_statements(template).items() for s in granted]
    for policy_id, policy in resources_of(template, *IDENTITY_POLICIES).items():
        if not policy["Properties"].get("Roles"):  # attached to users or groups: still checked
            found += [(policy_id, s) for s in statements(policy["Properties"]["PolicyDocument"])]
    return found


def resource_policy_statements(template: Template) -> list[tuple[str, Statement]]:
    found = []
    for logical_id, resource in resources_of(template, *RESOURCE_POLICIES).items():
        document = resource["Properties"].get(RESOURCE_POLICIES[resource["Type"]])
        if document is not None:
            found += [(logical_id, s) for s in statements(document)]
    return found


def actions(statement: Statement) -> list[str]:
    return as_list(statement.get("Action", []))


def is_account_root_key_admin(logical_id: str, statement: Statement, template: Template) -> bool:
    """The default key policy statement: this account's IAM decides who uses the key. Without it nobody,
    not even an administrator, could manage the key; IAM policies (checked here) then grant its use."""
    principal = json.dumps(statement.get("Principal", {}).get("AWS", ""))
    return (
        template["Resources"][logical_id]["Type"] == "AWS::KMS::Key"
        and actions(statement) == ["kms:*"]
        and "AWS::AccountId" in principal
        and principal.endswith(':root"]]}')
        and "Condition" not in statement
    )


# --- the rules: each returns what breaks it ----------------------------------------------------


def unchecked_policy_types(template: Template) -> list[str]:
    known = {"AWS::IAM::Role", *IDENTITY_POLICIES, *RESOURCE_POLICIES}
    return sorted(
        f"{logical_id} ({r['Type']}): holds a policy these tests do not read; add its type to RESOURCE_POLICIES"
        for logical_id, r in template["Resources"].items()
        if r["Type"] not in known and (_POLICY_PROPERTIES & set(r.get("Properties", {})) or r["Type"].endswith(("Policy", "::Permission")))
    )


def wildcard_actions(template: Template) -> list[str]:
    found = []
    for logical_id, s in identity_statements(template) + resource_policy_statements(template):
        if s["Effect"] != "Allow" or is_account_root_key_admin(logical_id, s, template):
            continue
        if "NotAction" in s or "NotResource" in s or "NotPrincipal" in s:
            found.append(f"{logical_id}: Allow with NotAction/NotResource/NotPrincipal grants everything else")
        found += [f"{logical_id}: allows {a}" for a in actions(s) if a == "*" or a.endswith(":*")]
    return found


def unconditioned_star_resources(template: Template) -> list[str]:
    return [
        f"{logical_id}: {sorted(set(actions(s)) - NO_RESOURCE_LEVEL)} on * with no condition"
        for logical_id, s in identity_statements(template)
        if s["Effect"] == "Allow" and "*" in as_list(s.get("Resource")) and "Condition" not in s
        and set(actions(s)) - NO_RESOURCE_LEVEL
    ]


def public_principals(template: Template) -> list[str]:
    return [
        f"{logical_id}: allows {actions(s)} to any principal with no condition"
        for logical_id, s in resource_policy_statements(template)
        if s["Effect"] == "Allow" and s.get("Principal") in ("*", {"AWS": "*"}) and not s.get("Condition")
    ]


# The one managed policy accepted: the CDK's own custom-resource provider that restricts the VPC's default
# security group (restrict_default_security_group) writes its logs with it; acknowledged in stacks/network.py.
ACCEPTED_MANAGED_POLICIES = {
    "CustomVpcRestrictDefaultSGCustomResourceProviderRole": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
}


def untrusted_role_principals(template: Template) -> list[str]:
    """Roles are for AWS services of this stack, never for another account or anyone."""
    found = []
    for role_id, role in resources_of(template, "AWS::IAM::Role").items():
        for s in statements(role["Properties"]["AssumeRolePolicyDocument"]):
            if set(s.get("Principal", {})) != {"Service"}:
                found.append(f"{role_id}: may be assumed by {s.get('Principal')}")
        accepted = [{"Fn::Sub": arn} for prefix, arn in ACCEPTED_MANAGED_POLICIES.items() if role_id.startswith(prefix)]
        found += [f"{role_id}: managed policy {arn}" for arn in role["Properties"].get("ManagedPolicyArns", [])
                  if arn not in accepted]
    return found


RULES: list[Callable[[Template], list[str]]] = [
    unchecked_policy_types,
    wildcard_actions,
    unconditioned_star_resources,
    public_principals,
    untrusted_role_principals,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_policy_in_the_template_keeps_the_rule(name: str, rule: Callable[[Template], list[str]]) -> None:
    assert rule(audited_template(name)) == []


# --- each role holds exactly what its user needs -----------------------------------------------


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_execution_role_reads_only_the_jobs_secret_and_writes_only_its_log_group(name: str) -> None:
    t = audited_template(name)
    _, definition = task_definition(t)
    granted = role_statements(t)[definition["ExecutionRoleArn"]["Fn::GetAtt"][0]]
    (container,) = definition["ContainerDefinitions"]
    secrets = [json.dumps(s["ValueFrom"]) for s in container.get("Secrets", [])]
    log_group_arn = {"Fn::GetAtt": [container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"], "Arn"]}

    assert {a for s in granted for a in actions(s)} <= EXECUTION_ROLE_ACTIONS
    for s in granted:
        assert s["Effect"] == "Allow"
        services = {a.split(":")[0] for a in actions(s)}
        assert len(services) == 1, f"one service per statement keeps resources unambiguous: {s}"
        resources = as_list(s["Resource"])
        if services == {"secretsmanager"}:
            # A secret imported by name is granted as NAME-?????? (the suffix Secrets Manager appends); one
            # imported by ARN as given and as ARN-?????? (complete and partial cannot be told apart).
            assert {json.dumps(r).replace("-??????", "") for r in resources} == set(secrets)
        elif services == {"logs"}:
            assert resources == [log_group_arn]
        elif actions(s) != ["ecr:GetAuthorizationToken"]:
            assert all("container-assets" in json.dumps(r) for r in resources), "pull only from the CDK image repository"


def state_machines(template: Template) -> list[str]:
    return list(resources_of(template, "AWS::StepFunctions::StateMachine"))


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_events_role_runs_only_this_task_definition_and_passes_only_its_two_roles(name: str) -> None:
    t = audited_template(name)
    definition_id, definition = task_definition(t)
    ((cluster_id, _),) = resources_of(t, "AWS::ECS::Cluster").items()
    events_roles = role_of(t, "events.amazonaws.com")
    assert events_roles, "the schedule starts the task through a role EventBridge assumes"
    if state_machines(t):  # shards > 1: the schedule only starts the fan-out
        (machine_id,) = state_machines(t)
        for role_id in events_roles:
            assert role_statements(t)[role_id] == [
                {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": machine_id}}
            ]
        return

    for role_id in events_roles:
        granted = role_statements(t)[role_id]
        assert {a for s in granted for a in actions(s)} <= EVENTS_ROLE_ACTIONS
        for s in granted:
            resources = as_list(s["Resource"])
            if "ecs:RunTask" in actions(s):
                assert actions(s) == ["ecs:RunTask"]
                assert resources == [{"Ref": definition_id}]
                assert s.get("Condition") == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}
            elif "iam:PassRole" in actions(s):
                assert actions(s) == ["iam:PassRole"]
                assert sorted(map(json.dumps, resources)) == sorted(
                    json.dumps(definition[key]) for key in ("ExecutionRoleArn", "TaskRoleArn")
                )
            else:
                assert actions(s) == ["ecs:TagResource"]
                assert all(f':task/", {{"Ref": "{cluster_id}"}}, "/*"' in json.dumps(r) for r in resources)


SHARDED = [name for name, config in CONFIGURATIONS.items() if int(config.get("shards", 1)) > 1]


@pytest.mark.parametrize("name", SHARDED)
def test_the_state_machine_role_runs_only_this_task_definition_passes_only_its_two_roles_and_alerts_only_the_topic(
    name: str,
) -> None:
    t = audited_template(name)
    definition_id, definition = task_definition(t)
    ((cluster_id, _),) = resources_of(t, "AWS::ECS::Cluster").items()
    ((topic_id, topic),) = resources_of(t, "AWS::SNS::Topic").items()
    (role_id,) = role_of(t, "states.amazonaws.com")
    in_cluster = {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}
    granted = {json.dumps(sorted(actions(s))): s for s in role_statements(t)[role_id]}

    assert granted.pop('["ecs:RunTask"]') == {"Action": "ecs:RunTask", "Condition": in_cluster, "Effect": "Allow",
                                              "Resource": {"Ref": definition_id}}
    passed = granted.pop('["iam:PassRole"]')["Resource"]
    assert sorted(map(json.dumps, passed)) == sorted(json.dumps(definition[k]) for k in ("ExecutionRoleArn", "TaskRoleArn"))
    assert granted.pop('["sns:Publish"]')["Resource"] == {"Ref": topic_id}
    assert granted.pop('["kms:Decrypt", "kms:GenerateDataKey"]')["Resource"] == topic["Properties"]["KmsMasterKeyId"]
    watch = granted.pop('["ecs:DescribeTasks", "ecs:StopTask"]')
    assert watch["Condition"] == in_cluster and f':task/", {{"Ref": "{cluster_id}"}}, "/*"' in json.dumps(watch["Resource"])
    tag = granted.pop('["ecs:TagResource"]')
    assert tag["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}
    assert f':task/", {{"Ref": "{cluster_id}"}}, "/*"' in json.dumps(tag["Resource"])
    # The .sync integration learns that a task stopped from this one EventBridge rule, which it manages.
    assert json.dumps(granted.pop('["events:DescribeRule", "events:PutRule", "events:PutTargets"]')["Resource"]).endswith(
        ':rule/StepFunctionsGetEventsForECSTaskRule"]]}'
    )
    (log_delivery,) = granted.values()
    assert set(actions(log_delivery)) <= NO_RESOURCE_LEVEL and log_delivery["Resource"] == "*"


def test_run_task_is_granted_on_this_family_only() -> None:
    t = audited_template("dev")
    definition_id, definition = task_definition(t)
    assert definition["Family"] == "etl-pipeline-dev"
    runs = [s for role_id in role_of(t, "events.amazonaws.com") for s in role_statements(t)[role_id] if "ecs:RunTask" in actions(s)]
    assert runs and all(s["Resource"] == {"Ref": definition_id} for s in runs)


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_task_role_holds_only_the_overlap_check_on_its_cluster(name: str) -> None:
    t = audited_template(name)
    _, definition = task_definition(t)
    ((cluster_id, _),) = resources_of(t, "AWS::ECS::Cluster").items()
    granted = role_statements(t)[definition["TaskRoleArn"]["Fn::GetAtt"][0]]

    assert {a for s in granted for a in actions(s)} == TASK_ROLE_ACTIONS
    for s in granted:
        assert s.get("Condition") == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}


def test_the_job_calls_every_api_its_task_role_allows() -> None:
    """A permission the job's code never calls is one to remove (boto3 names ListTasks list_tasks)."""
    source = "\n".join(p.read_text() for p in ETL_JOB_DIR.glob("*.py"))
    for action in TASK_ROLE_ACTIONS:
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", action.split(":")[1]).lower()
        assert re.search(rf"\b{method}\b", source), f"{action} is granted but etl_job/ never calls {method}"


# --- the checks catch what they are for --------------------------------------------------------


def _with_statement(statement: Statement, role: str = "task", name: str = "dev") -> Template:
    """The ``name`` template with ``statement`` added to the task, execution, events or states role's policy."""
    t = copy.deepcopy(audited_template(name))
    _, definition = task_definition(t)
    role_id = {
        "task": lambda: definition["TaskRoleArn"]["Fn::GetAtt"][0],
        "execution": lambda: definition["ExecutionRoleArn"]["Fn::GetAtt"][0],
        "events": lambda: role_of(t, "events.amazonaws.com")[0],
        "states": lambda: role_of(t, "states.amazonaws.com")[0],
    }[role]()
    for policy in resources_of(t, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            policy["Properties"]["PolicyDocument"]["Statement"].append(statement)
    return t


@pytest.mark.parametrize(
    ("rule", "statement"),
    [
        (wildcard_actions, {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::bucket/*"}),
        (wildcard_actions, {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::bucket"}),
        (wildcard_actions, {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::bucket"}),
        (unconditioned_star_resources, {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}),
    ],
)
def test_the_rules_catch_a_broad_identity_statement(rule: Callable[[Template], list[str]], statement: Statement) -> None:
    assert rule(audited_template("dev")) == []
    assert rule(_with_statement(statement))


def test_the_rules_catch_a_public_resource_policy_and_an_unknown_policy_type() -> None:
    t = copy.deepcopy(audited_template("dev"))
    ((_, queue_policy),) = resources_of(t, "AWS::SQS::QueuePolicy").items()
    queue_policy["Properties"]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sqs:SendMessage", "Resource": "*"}
    )
    t["Resources"]["Invoke"] = {"Type": "AWS::Lambda::Permission", "Properties": {"Principal": "*"}}
    t["Resources"]["SharedKey"] = {
        "Type": "AWS::KMS::Key",
        "Properties": {"KeyPolicy": {"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "kms:*", "Resource": "*"}
        ]}},
    }
    assert public_principals(t) and unchecked_policy_types(t)
    assert wildcard_actions(t) == ["SharedKey: allows kms:*"]


OTHER_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:other-AbCdEf"


@pytest.mark.parametrize(
    ("test", "role", "statement"),
    [
        (test_the_execution_role_reads_only_the_jobs_secret_and_writes_only_its_log_group, "execution",
         {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": OTHER_SECRET}),
        (test_the_execution_role_reads_only_the_jobs_secret_and_writes_only_its_log_group, "execution",
         {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "arn:aws:logs:eu-west-1:123456789012:log-group:other"}),
        (test_the_events_role_runs_only_this_task_definition_and_passes_only_its_two_roles, "events",
         {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/admin"}),
        (test_the_events_role_runs_only_this_task_definition_and_passes_only_its_two_roles, "events",
         {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:eu-west-1:123456789012:task-definition/other:1"}),
        (test_the_task_role_holds_only_the_overlap_check_on_its_cluster, "task",
         {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": OTHER_SECRET}),
        (test_the_task_role_holds_only_the_overlap_check_on_its_cluster, "task",
         {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*"}),
        (test_the_state_machine_role_runs_only_this_task_definition_passes_only_its_two_roles_and_alerts_only_the_topic,
         "states", {"Effect": "Allow", "Action": "sns:Publish", "Resource": "arn:aws:sns:eu-west-1:123456789012:other"}),
        (test_the_state_machine_role_runs_only_this_task_definition_passes_only_its_two_roles_and_alerts_only_the_topic,
         "states", {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:eu-west-1:123456789012:task-definition/other:1"}),
        (test_the_events_role_runs_only_this_task_definition_and_passes_only_its_two_roles, "events",
         {"Effect": "Allow", "Action": "states:StartExecution", "Resource": "arn:aws:states:eu-west-1:123456789012:stateMachine:other"}),
    ],
    ids=["exec-other-secret", "exec-other-log-group", "events-pass-other-role", "events-run-other-task", "task-secret",
         "task-no-condition", "states-other-topic", "states-run-other-task", "events-start-other-machine"],
)
def test_the_role_tests_fail_on_an_extra_grant(
    monkeypatch: pytest.MonkeyPatch, test: Callable[[str], None], role: str, statement: Statement
) -> None:
    name = "dev-shards" if role == "states" or "StartExecution" in statement["Action"] else "dev"
    widened = _with_statement(statement, role, name)
    monkeypatch.setattr(sys.modules[__name__], "audited_template", lambda name: widened)
    with pytest.raises(AssertionError):
        test(name)


def iam_resource_matches(pattern: str, arn: str) -> bool:
    """IAM's Resource matching: '*' any run of characters, '?' exactly one (case-sensitive)."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), arn) is not None


SECRETS_PREFIX = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"


@pytest.mark.parametrize(
    ("configured", "actual"),
    [
        ("prod/google-etl-key-AbCdEf", "prod/google-etl-key-AbCdEf"),  # complete ARN
        ("etl/google-key", "etl/google-key-Xy12Zw"),  # partial ARN
        ("etl/google-key-prod01", "etl/google-key-prod01-Xy12Zw"),  # partial ARN of a name ending in -xxxxxx
    ],
    ids=["complete", "partial", "partial-ending-like-a-suffix"],
)
def test_the_execution_role_can_read_an_imported_secret_given_by_any_arn(configured: str, actual: str) -> None:
    t = synth(google_credentials_secret=SECRETS_PREFIX + configured).to_json()
    _, definition = task_definition(t)
    granted = role_statements(t)[definition["ExecutionRoleArn"]["Fn::GetAtt"][0]]
    reads = [r for s in granted if "secretsmanager:GetSecretValue" in actions(s) for r in as_list(s["Resource"])]

    assert any(iam_resource_matches(r, SECRETS_PREFIX + actual) for r in reads), reads
    assert not any(iam_resource_matches(r, SECRETS_PREFIX + "etl/other-AbCdEf") for r in reads)
