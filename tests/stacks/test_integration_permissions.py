"""The integration permission matrix: every producer -> consumer pair of the template, as AWS documents it.

A local AWS does not enforce IAM, resource or key policies, so this is where an integration that
deploys but is refused at run time (an alarm CloudWatch may not publish, a queue EventBridge may not
write to) shows up. One row per pair; each names the AWS page it rests on. For each row, the
consumer's resource policy AND, where the consumer is encrypted with a customer-managed key, that
key's policy must admit the producer's service principal (or role), with ``aws:SourceArn`` /
``aws:SourceAccount`` where the service sends them and the page documents them. Conditions the page
does not document are not required, but when present they must name this stack's resources.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import synth

ACCOUNT = {"Ref": "AWS::AccountId"}
SECURE_TRANSPORT_ONLY = {"Bool": {"aws:SecureTransport": "false"}}

# Configurations that change which integrations exist: the defaults, prod, every optional key on,
# and an existing secret (no secret resource in the template).
CONFIGURATIONS = {
    "dev": {},
    "prod": {"stage": "prod"},
    "keys-spot-email": {"log_kms_key": "true", "secret_kms_key": "true", "capacity": "spot", "alarm_email": "oncall@example.com"},
    "existing-secret": {"google_credentials_secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl/google-AbCdEf"},
    "shards": {"shards": "2"},  # the schedule starts a Step Functions fan-out instead of one task
}


def _fans_out(overrides: dict) -> bool:
    return int(overrides.get("shards", 1)) > 1


class Stack:
    """The synthesized template, read the way the matrix needs it."""

    def __init__(self, template: dict) -> None:
        self.resources: dict[str, dict] = template["Resources"]

    def of_type(self, type_name: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_name}

    def one(self, type_name: str, where: Callable[[str, dict], bool] = lambda *_: True) -> str:
        (found,) = [k for k, v in self.of_type(type_name).items() if where(k, v)]
        return found

    def resource_policy(self, policy_type: str, list_key: str, target_id: str) -> list[dict]:
        """Statements of the resource policies (topic/queue/secret policy) attached to ``target_id``."""
        statements = []
        for policy in self.of_type(policy_type).values():
            props = policy["Properties"]
            attached = props.get(list_key)
            attached = attached if isinstance(attached, list) else [attached]
            if {"Ref": target_id} in attached:
                document = props.get("PolicyDocument") or props.get("ResourcePolicy")
                statements += document["Statement"]
        return statements

    def key_policy(self, key_id: str) -> list[dict]:
        return self.resources[key_id]["Properties"]["KeyPolicy"]["Statement"]

    def key_of(self, resource_id: str, prop: str) -> str | None:
        """The logical id of the stack's KMS key a resource's ``prop`` names (GetAtt/Ref), if any."""
        value = json.dumps(self.resources[resource_id]["Properties"].get(prop))
        return next((key for key in self.of_type("AWS::KMS::Key") if f'"{key}"' in value), None)

    def role_statements(self, role_id: str) -> list[dict]:
        statements = []
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
        for inline in self.resources[role_id]["Properties"].get("Policies", []):
            statements += inline["PolicyDocument"]["Statement"]
        return statements

    def trust(self, role_id: str) -> list[dict]:
        return self.resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _covers(granted: Any, wanted: str) -> bool:
    return any(fnmatch.fnmatchcase(wanted.lower(), pattern.lower()) for pattern in _list(granted))


def _names(principal: Any, kind: str) -> list:
    if principal == "*" or principal == {"AWS": "*"}:
        return ["*"]
    return _list(principal.get(kind, [])) if isinstance(principal, dict) else []


def _resource_matches(statement: dict, resource: Any) -> bool:
    return resource is None or any(r == "*" or r == resource for r in _list(statement.get("Resource", "*")))


def _denied(statements: list[dict], action: str, principal_arn: Any) -> list[dict]:
    """Deny statements that would refuse ``action`` to the principal (a TLS-only deny never does)."""
    refusing = []
    for s in statements:
        if s["Effect"] != "Deny" or not _covers(s["Action"], action) or s.get("Condition") == SECURE_TRANSPORT_ONLY:
            continue
        exempt = json.dumps(s.get("Condition", {}).get("ArnNotEquals", {})) + json.dumps(s.get("Condition", {}).get("StringNotEquals", {}))
        if principal_arn is not None and json.dumps(principal_arn) in exempt:
            continue
        refusing.append(s)
    return refusing


def admits(statements: list[dict], *, service: str | None = None, role: Any = None, actions: tuple[str, ...], resource: Any = None) -> list[dict]:
    """The Allow statements that grant every action to the service principal or role; [] if none."""
    found = []
    for s in statements:
        if s["Effect"] != "Allow" or not _resource_matches(s, resource):
            continue
        principal = s.get("Principal", {})
        who = (service and service in _names(principal, "Service")) or (role is not None and (role in _names(principal, "AWS")))
        if who and all(_covers(s["Action"], a) for a in actions):
            found.append(s)
    assert not _denied(statements, actions[0], role), f"a Deny refuses {actions[0]} to {service or role}"
    return found


def the_statement_admitting(statements: list[dict], **wanted: Any) -> dict:
    """The one Allow statement that admits the producer; fails naming what is missing."""
    found = admits(statements, **wanted)
    assert len(found) == 1, f"expected one statement allowing {wanted}, found {len(found)} in {json.dumps(statements)[:600]}"
    return found[0]


def source_conditions(statement: dict) -> dict[str, list]:
    """aws:SourceArn / aws:SourceAccount values of a statement, whatever the operator."""
    found: dict[str, list] = {}
    for operator in statement.get("Condition", {}).values():
        for key, value in operator.items():
            if key.lower() in ("aws:sourcearn", "aws:sourceaccount"):
                found.setdefault(key.lower(), []).extend(_list(value))
    return found


def check_sources(statement: dict, *, source_arns: list | None, required: bool) -> None:
    """Required or not, conditions present must name this account and only these source ARNs."""
    found = source_conditions(statement)
    if required:
        assert "aws:sourcearn" in found and "aws:sourceaccount" in found, f"no aws:SourceArn/aws:SourceAccount in {statement}"
    if "aws:sourceaccount" in found:
        assert found["aws:sourceaccount"] == [ACCOUNT], found
    if "aws:sourcearn" in found and source_arns is not None:
        assert sorted(map(json.dumps, found["aws:sourcearn"])) == sorted(map(json.dumps, source_arns)), found


@dataclass(frozen=True)
class Integration:
    producer: str
    consumer: str
    docs: tuple[str, ...]
    check: Callable[[Stack], None]
    applies: Callable[[dict], bool] = lambda overrides: True


def _topic(stack: Stack) -> str:
    return stack.one("AWS::SNS::Topic")


def _topic_publishers(stack: Stack, rule_ids: list[str]) -> None:
    topic = _topic(stack)
    statements = stack.resource_policy("AWS::SNS::TopicPolicy", "Topics", topic)
    allowed = the_statement_admitting(statements, service="events.amazonaws.com", actions=("sns:Publish",), resource={"Ref": topic})
    # EventBridge's page documents no source condition for SNS targets; present ones must be right.
    check_sources(allowed, source_arns=[{"Fn::GetAtt": [r, "Arn"]} for r in rule_ids], required=False)


def eventbridge_to_sns(stack: Stack) -> None:
    topic = _topic(stack)
    rules = [k for k, v in stack.of_type("AWS::Events::Rule").items() if any(t["Arn"] == {"Ref": topic} for t in v["Properties"]["Targets"])]
    assert len(rules) >= 2, "the task-failed and launch-refused rules publish to the topic"
    for rule in rules:
        target = next(t for t in stack.resources[rule]["Properties"]["Targets"] if t["Arn"] == {"Ref": topic})
        assert "RoleArn" not in target, "SNS targets are authorized by the topic policy; a RoleArn breaks KMS topics"
    _topic_publishers(stack, rules)
    key = stack.key_of(topic, "KmsMasterKeyId")
    assert key, "the topic is encrypted with the stack's customer-managed key"
    assert admits(stack.key_policy(key), service="events.amazonaws.com", actions=("kms:GenerateDataKey", "kms:Decrypt"))


def alarms_to_sns(stack: Stack) -> None:
    topic = _topic(stack)
    alarms = [k for k, v in stack.of_type("AWS::CloudWatch::Alarm").items() if {"Ref": topic} in v["Properties"].get("AlarmActions", [])]
    assert alarms, "alarms act on the topic"
    statements = stack.resource_policy("AWS::SNS::TopicPolicy", "Topics", topic)
    allowed = the_statement_admitting(statements, service="cloudwatch.amazonaws.com", actions=("sns:Publish",), resource={"Ref": topic})
    check_sources(allowed, source_arns=[{"Fn::GetAtt": [a, "Arn"]} for a in alarms], required=True)
    key = stack.key_of(topic, "KmsMasterKeyId")
    assert admits(stack.key_policy(key), service="cloudwatch.amazonaws.com", actions=("kms:GenerateDataKey", "kms:Decrypt"))


def schedule_rule(stack: Stack) -> str:
    return stack.one("AWS::Events::Rule", lambda _, v: "ScheduleExpression" in v["Properties"])


def eventbridge_to_dead_letter_queue(stack: Stack) -> None:
    rule = schedule_rule(stack)
    (target,) = stack.resources[rule]["Properties"]["Targets"]
    queue = stack.one("AWS::SQS::Queue")
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
    statements = stack.resource_policy("AWS::SQS::QueuePolicy", "Queues", queue)
    allowed = the_statement_admitting(statements, service="events.amazonaws.com", actions=("sqs:SendMessage",), resource={"Fn::GetAtt": [queue, "Arn"]})
    found = source_conditions(allowed)
    assert found.get("aws:sourcearn") == [{"Fn::GetAtt": [rule, "Arn"]}], "only the schedule rule may write (EventBridge sends aws:SourceArn)"
    props = stack.resources[queue]["Properties"]
    # EventBridge cannot use the AWS-managed alias/aws/sqs key; SQS-managed encryption needs no key policy.
    assert props.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in props


def _role(stack: Stack, trusted: str, name_part: str) -> str:
    return stack.one(
        "AWS::IAM::Role",
        lambda k, v: name_part in k and any(trusted in _names(s["Principal"], "Service") for s in v["Properties"]["AssumeRolePolicyDocument"]["Statement"]),
    )


def _rule_arn(stack: Stack, rule: str) -> dict:
    """The rule's ARN spelled from its name: a GetAtt of the rule would make rule and role depend on each other."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":events:", {"Ref": "AWS::Region"}, ":",
                              {"Ref": "AWS::AccountId"}, f":rule/{stack.resources[rule]['Properties']['Name']}"]]}


def eventbridge_runs_the_task(stack: Stack) -> None:
    rule = schedule_rule(stack)
    (target,) = stack.resources[rule]["Properties"]["Targets"]
    events_role = _role(stack, "events.amazonaws.com", "EventsRole")
    assert target["RoleArn"] == {"Fn::GetAtt": [events_role, "Arn"]}
    trust = the_statement_admitting(stack.trust(events_role), service="events.amazonaws.com", actions=("sts:AssumeRole",))
    check_sources(trust, source_arns=[_rule_arn(stack, rule)], required=True)
    task_definition = stack.one("AWS::ECS::TaskDefinition")
    statements = stack.role_statements(events_role)
    run = [s for s in statements if s["Effect"] == "Allow" and _covers(s["Action"], "ecs:RunTask")]
    assert run and all(_list(s["Resource"]) == [{"Ref": task_definition}] for s in run), run
    passed = {json.dumps(r) for s in statements if s["Effect"] == "Allow" and _covers(s["Action"], "iam:PassRole") for r in _list(s["Resource"])}
    roles = {json.dumps({"Fn::GetAtt": [stack.resources[task_definition]["Properties"][p]["Fn::GetAtt"][0], "Arn"]}) for p in ("TaskRoleArn", "ExecutionRoleArn")}
    assert passed == roles, "PassRole on exactly the task and execution roles"


def _state_machine(stack: Stack) -> str:
    return stack.one("AWS::StepFunctions::StateMachine")


def eventbridge_starts_the_fan_out(stack: Stack) -> None:
    rule = schedule_rule(stack)
    (target,) = stack.resources[rule]["Properties"]["Targets"]
    machine = _state_machine(stack)
    assert target["Arn"] == {"Ref": machine}
    role = target["RoleArn"]["Fn::GetAtt"][0]
    trust = the_statement_admitting(stack.trust(role), service="events.amazonaws.com", actions=("sts:AssumeRole",))
    check_sources(trust, source_arns=[_rule_arn(stack, rule)], required=True)
    assert _allowed_resources(stack.role_statements(role), "states:StartExecution") == [{"Ref": machine}]


def _machine_role(stack: Stack) -> tuple[str, list[dict]]:
    role = stack.resources[_state_machine(stack)]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    trust = the_statement_admitting(stack.trust(role), service="states.amazonaws.com", actions=("sts:AssumeRole",))
    check_sources(trust, source_arns=None, required=False)
    return role, stack.role_statements(role)


def fan_out_runs_the_tasks(stack: Stack) -> None:
    _, statements = _machine_role(stack)
    task_definition = stack.one("AWS::ECS::TaskDefinition")
    assert _allowed_resources(statements, "ecs:RunTask") == [{"Ref": task_definition}]
    passed = sorted(json.dumps(r) for r in _allowed_resources(statements, "iam:PassRole"))
    roles = sorted(json.dumps({"Fn::GetAtt": [stack.resources[task_definition]["Properties"][p]["Fn::GetAtt"][0], "Arn"]})
                   for p in ("TaskRoleArn", "ExecutionRoleArn"))
    assert passed == roles, "PassRole on exactly the task and execution roles"
    # The .sync integration waits on a managed EventBridge rule it creates in the account.
    (managed,) = _allowed_resources(statements, "events:PutTargets")
    assert "rule/StepFunctionsGetEventsForECSTaskRule" in json.dumps(managed)


def fan_out_alerts(stack: Stack) -> None:
    _, statements = _machine_role(stack)
    topic = _topic(stack)
    assert _allowed_resources(statements, "sns:Publish") == [{"Ref": topic}]
    key = stack.key_of(topic, "KmsMasterKeyId")
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert {"Fn::GetAtt": [key, "Arn"]} in _allowed_resources(statements, action), action
    # A role's own policy is enough only when the key policy lets the account's IAM policies decide.
    account_root = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::", ACCOUNT, ":root"]]}
    assert admits(stack.key_policy(key), role=account_root, actions=("kms:GenerateDataKey", "kms:Decrypt"))


def _execution_role(stack: Stack) -> str:
    task_definition = stack.resources[stack.one("AWS::ECS::TaskDefinition")]["Properties"]
    return task_definition["ExecutionRoleArn"]["Fn::GetAtt"][0]


def _allowed_resources(statements: list[dict], action: str) -> list:
    return [r for s in statements if s["Effect"] == "Allow" and _covers(s["Action"], action) for r in _list(s["Resource"])]


def execution_role_reads_the_secret(stack: Stack) -> None:
    role = _execution_role(stack)
    admits(stack.trust(role), service="ecs-tasks.amazonaws.com", actions=("sts:AssumeRole",))
    (container,) = stack.resources[stack.one("AWS::ECS::TaskDefinition")]["Properties"]["ContainerDefinitions"]
    (secret_ref,) = [s["ValueFrom"] for s in container["Secrets"]]
    # A secret given by ARN is granted as given and as ARN-?????? (complete and partial look alike).
    allowed = _allowed_resources(stack.role_statements(role), "secretsmanager:GetSecretValue")
    assert allowed in ([secret_ref], [secret_ref, f"{secret_ref}-??????"]), allowed
    secrets = stack.of_type("AWS::SecretsManager::Secret")
    if not secrets:
        return  # an existing secret: its policies live outside this stack (README, Deploy)
    (secret_id,) = secrets
    role_arn = {"Fn::GetAtt": [role, "Arn"]}
    policy = stack.resource_policy("AWS::SecretsManager::ResourcePolicy", "SecretId", secret_id)
    if policy:
        assert not _denied(policy, "secretsmanager:GetSecretValue", role_arn), "the secret's resource policy refuses the execution role"
    key = stack.key_of(secret_id, "KmsKeyId")
    if key:
        # Secrets Manager decrypts on the caller's behalf: the key policy must let the role (or the
        # account, which IAM then narrows) decrypt through Secrets Manager.
        admitted = [s for s in stack.key_policy(key) if s["Effect"] == "Allow" and _covers(s["Action"], "kms:Decrypt")]
        assert admitted, "the secret's key lets no one decrypt"


def execution_role_writes_logs(stack: Stack) -> None:
    role = _execution_role(stack)
    group = stack.one("AWS::Logs::LogGroup")
    statements = stack.role_statements(role)
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert _allowed_resources(statements, action) == [{"Fn::GetAtt": [group, "Arn"]}], action


def execution_role_pulls_the_image(stack: Stack) -> None:
    statements = stack.role_statements(_execution_role(stack))
    assert _allowed_resources(statements, "ecr:GetAuthorizationToken") == ["*"]
    for action in ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"):
        (repository,) = _allowed_resources(statements, action)
        assert "repository/" in json.dumps(repository) and "container-assets" in json.dumps(repository), repository


def logs_use_their_key(stack: Stack) -> None:
    group = stack.one("AWS::Logs::LogGroup")
    key = stack.key_of(group, "KmsKeyId")
    if key is None:
        return  # log_kms_key off: CloudWatch Logs' own service key, no key policy involved
    actions = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:GenerateDataKey", "kms:DescribeKey")
    allowed = the_statement_admitting(stack.key_policy(key), service={"Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}, actions=actions)
    context = json.dumps(allowed.get("Condition", {}))
    assert "kms:EncryptionContext:aws:logs:arn" in context and ":log-group:" in context, allowed


def topic_uses_its_key(stack: Stack) -> None:
    topic = _topic(stack)
    key = stack.key_of(topic, "KmsMasterKeyId")
    assert key, "a customer-managed key: EventBridge and CloudWatch cannot publish under alias/aws/sns"
    assert stack.resources[key]["Properties"]["EnableKeyRotation"] is True
    # The account administers the key; SNS uses it with the publishers' forward access.
    assert admits(stack.key_policy(key), role={"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::", ACCOUNT, ":root"]]}, actions=("kms:*",))


def _service_in(principal: Any, service: Any) -> bool:
    return service in _names(principal, "Service")


INTEGRATIONS = [
    Integration("EventBridge rules (task failed, launch refused)", "SNS alert topic and its KMS key", (
        "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions",
        "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services",
    ), eventbridge_to_sns),
    Integration("CloudWatch alarms", "SNS alert topic and its KMS key", (
        "https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-use-cases.html",
        "https://repost.aws/knowledge-center/cloudwatch-receive-sns-for-alarm-trigger",
        "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services",
    ), alarms_to_sns),
    Integration("EventBridge schedule rule", "SQS dead-letter queue", (
        "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html",
        "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions",
    ), eventbridge_to_dead_letter_queue),
    Integration("EventBridge schedule rule (events role)", "ECS RunTask and iam:PassRole", (
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/CWE_IAM_role.html",
        "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-identity-based.html",
    ), eventbridge_runs_the_task, applies=lambda overrides: not _fans_out(overrides)),
    Integration("EventBridge schedule rule (its role)", "Step Functions fan-out (states:StartExecution)", (
        "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-identity-based.html",
        "https://docs.aws.amazon.com/step-functions/latest/dg/tutorial-cloudwatch-events-target.html",
    ), eventbridge_starts_the_fan_out, applies=_fans_out),
    Integration("Step Functions fan-out (its role)", "ECS RunTask (.sync) and iam:PassRole", (
        "https://docs.aws.amazon.com/step-functions/latest/dg/ecs-iam.html",
    ), fan_out_runs_the_tasks, applies=_fans_out),
    Integration("Step Functions fan-out (its role)", "SNS alert topic and its KMS key", (
        "https://docs.aws.amazon.com/step-functions/latest/dg/sns-iam.html",
        "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html",
    ), fan_out_alerts, applies=_fans_out),
    Integration("ECS execution role", "Secrets Manager secret (and its KMS key)", (
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html",
        "https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html",
    ), execution_role_reads_the_secret),
    Integration("ECS execution role", "CloudWatch Logs log group", (
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using_awslogs.html",
    ), execution_role_writes_logs),
    Integration("ECS execution role", "ECR image repository", (
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html",
    ), execution_role_pulls_the_image),
    Integration("CloudWatch Logs", "the logs KMS key (log_kms_key)", (
        "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html",
    ), logs_use_their_key),
    Integration("SNS (topic encryption)", "the topic's KMS key", (
        "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html",
        "https://docs.aws.amazon.com/sns/latest/dg/sns-server-side-encryption.html",
    ), topic_uses_its_key),
]


def _cases() -> Iterator:
    for integration in INTEGRATIONS:
        for name, overrides in CONFIGURATIONS.items():
            if integration.applies(overrides):
                yield pytest.param(integration, overrides, id=f"{integration.producer} -> {integration.consumer} [{name}]")


@pytest.mark.parametrize(("integration", "overrides"), list(_cases()))
def test_the_consumer_admits_the_producer(integration: Integration, overrides: dict) -> None:
    integration.check(Stack(synth(**overrides).to_json()))


def test_every_row_cites_aws_documentation() -> None:
    for integration in INTEGRATIONS:
        assert integration.docs and all(url.startswith(("https://docs.aws.amazon.com/", "https://repost.aws/")) for url in integration.docs)


def test_the_matrix_catches_a_topic_policy_that_refuses_alarms() -> None:
    """Today's defect 2, rebuilt: a topic policy admitting only EventBridge fails the alarm row."""
    template = synth().to_json()
    for policy in Stack(template).of_type("AWS::SNS::TopicPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        statements[:] = [s for s in statements if not _service_in(s.get("Principal", {}), "cloudwatch.amazonaws.com")]
    with pytest.raises(AssertionError, match="cloudwatch.amazonaws.com"):
        alarms_to_sns(Stack(template))
