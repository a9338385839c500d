"""The audit report's sections on the Google credential: who can read the key, and where the credential lives.

Read from the synthesized template (roles, the secret's resource policy, its key, the schedule rule, the
fan-out state machine), plus the routes that live outside any template: what other principals of the
account can do with ECS, EventBridge, IAM and the policies themselves. README "Who can read the key" is
the same list for people; tests/stacks/test_key_readers.py checks both.
"""

from __future__ import annotations

import json
from typing import Any

from etl_job import contract

Template = dict[str, Any]


def as_list(value: Any) -> list[Any]:
    """A policy field as a list: IAM accepts one item or a list of them."""
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> list[dict[str, Any]]:
    """The statements of a policy document (a dict or its JSON text; an EventBusPolicy holds a single one)."""
    if isinstance(document, str):
        document = json.loads(document)
    if isinstance(document, dict) and "Statement" in document:
        return as_list(document["Statement"])
    return as_list(document)


def _resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def _name(names: dict[str, str], logical_id: str) -> str:
    return f"`{names.get(logical_id, logical_id)}`"


def _container(template: Template) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The task definition's logical id and properties, and its one container."""
    ((definition_id, definition),) = _resources(template, "AWS::ECS::TaskDefinition").items()
    (container,) = definition["Properties"]["ContainerDefinitions"]
    return definition_id, definition["Properties"], container


def _allowed_readers(template: Template) -> list[Any] | None:
    """The principals the secret's resource policy still lets read (None: no such policy in the template)."""
    for policy in _resources(template, "AWS::SecretsManager::ResourcePolicy").values():
        for s in statements(policy["Properties"]["ResourcePolicy"]):
            if s["Effect"] == "Deny" and "secretsmanager:GetSecretValue" in json.dumps(s.get("Action")):
                return as_list(s.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn", []))
    return None


def _reader_text(value: Any, names: dict[str, str]) -> str:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return _name(names, value["Fn::GetAtt"][0])
    return f"`{value}`"


def key_readers(template: Template, names: dict[str, str]) -> list[str]:
    """Markdown lines: who can read the Google key in this configuration, directly and by each route."""
    definition_id, definition, container = _container(template)
    if not container.get("Secrets"):
        return ["No Google key exists in this configuration (workload_identity): the task role's short-lived "
                "credentials are exchanged for short-lived Google tokens; see \"Where the Google credential lives\"."]
    execution_role = _name(names, definition["ExecutionRoleArn"]["Fn::GetAtt"][0])
    task_role = _name(names, definition["TaskRoleArn"]["Fn::GetAtt"][0])
    return [
        *_direct_readers(template, names, definition_id, execution_role),
        *_readers_by_running(template, names, _name(names, definition_id), execution_role, task_role),
        *_readers_by_changing(execution_role),
    ]


def _direct_readers(template: Template, names: dict[str, str], definition_id: str, execution_role: str) -> list[str]:
    readers = _allowed_readers(template)
    secrets = _resources(template, "AWS::SecretsManager::Secret")
    key_ids = [s["Properties"]["KmsKeyId"]["Fn::GetAtt"][0] for s in secrets.values() if "KmsKeyId" in s["Properties"]]
    lines = ["Directly (the secret's value is returned to them):", ""]
    lines.append(f"- the execution role {execution_role}: ECS reads the secret with it when a task of "
                 f"{_name(names, definition_id)} starts, and puts it in the container's environment.")
    if readers is not None:
        others = [_reader_text(r, names) for r in readers[1:]]
        lines.append(f"- {'the break-glass role ' + ', '.join(others) if others else 'no one else'}: the secret's "
                     "resource policy denies `secretsmanager:GetSecretValue` to every other principal of every account, "
                     "whatever their IAM policies allow (administrators with `secretsmanager:*` on `*` included).")
    else:
        lines.append("- **any principal of the account whose IAM policies allow `secretsmanager:GetSecretValue` on it** "
                     "(or on `*`): the secret is not this stack's (google_credentials_secret), so its resource policy "
                     "is whatever its owner set; give it one that denies reads to all but the execution role.")
    if key_ids:
        lines.append(f"- the KMS key {_name(names, key_ids[0])} denies `kms:Decrypt` and `kms:ReEncrypt*` to the same "
                     "principals, so the value cannot be decrypted by anyone else either.")
    elif secrets:
        lines.append("- the AWS-managed key aws/secretsmanager lets any principal of the account use `kms:Decrypt` through "
                     "Secrets Manager: the resource policy above is the lock (`secret_kms_key` adds a second).")
    return lines


def _readers_by_running(
    template: Template, names: dict[str, str], definition: str, execution_role: str, task_role: str
) -> list[str]:
    lines = ["", "By running the job's task definition or a copy of it (the container then holds the key in its "
             "environment, and its security group allows HTTPS out to anywhere, so overridden code can send it away):", ""]
    lines.append(f"- whoever may call `ecs:RunTask` (or `ecs:StartTask`) on {definition} and "
                 f"`iam:PassRole` on {execution_role} and {task_role}: RunTask's overrides replace the command and "
                 "the environment. In this template that is:")
    for role_id, role in _resources(template, "AWS::IAM::Role").items():
        for s in statements(role["Properties"]["AssumeRolePolicyDocument"]):
            service = s.get("Principal", {}).get("Service")
            if service in ("events.amazonaws.com", "states.amazonaws.com") and _runs_or_starts(template, role_id):
                scoped = "aws:SourceArn" in json.dumps(s.get("Condition", {}))
                lines.append(f"  - {_name(names, role_id)}, assumed only by {service}"
                             f"{' for the schedule rule (aws:SourceArn)' if scoped else ''}")
    return [
        *lines,
        "  - outside the template: every operator given `make run-now` / the RunNowCommand output (it runs this "
        "stack's own task-definition revision, TaskDefinitionArn, never the family's latest).",
        "- whoever may call `events:PutTargets` (or `events:PutRule`) on the schedule rule with `iam:PassRole` on its "
        "events role: the target's input becomes RunTask's overrides.",
        "- with `shards` > 1, whoever may call `states:StartExecution` on the state machine only starts the same "
        "task definition with shard numbers; changing the state machine (`states:UpdateStateMachine`) is like "
        "changing the rule's target.",
        f"- whoever may call `ecs:RegisterTaskDefinition` with `iam:PassRole` on {execution_role}: a new task "
        "definition naming the same secret is read by the same execution role, which the secret's policy admits.",
    ]


def _readers_by_changing(execution_role: str) -> list[str]:
    return [
        "",
        "By changing who is allowed (each of these can grant any of the above):",
        "",
        "- `secretsmanager:PutResourcePolicy` / `DeleteResourcePolicy` on the secret, `kms:PutKeyPolicy` on its key, "
        f"`iam:PutRolePolicy`, `AttachRolePolicy` or `UpdateAssumeRolePolicy` on {execution_role};",
        "- deploying this stack (the CDK deployment roles, `cloudformation:*` on it) or updating its template.",
        "",
        "Not a route: the job's logs (the job never writes the key or any field of the secret, only field names and "
        "types), the task role (it can read task status only), and a transform or a child process of the job (the "
        "variable is removed from the environment, and blanked in /proc, once the key is parsed; the parsed key stays "
        "in the job's memory). An account's SCPs or permission policies should deny the calls above to everyone but "
        "the deployment role and the named operators (README, \"Who can read the key\").",
    ]


def _runs_or_starts(template: Template, role_id: str) -> bool:
    """Whether the role's policies allow ecs:RunTask or states:StartExecution (the routes to starting the task)."""
    for policy in _resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"].get("Roles", []):
            text = json.dumps(policy["Properties"]["PolicyDocument"])
            if "ecs:RunTask" in text or "states:StartExecution" in text:
                return True
    return False


def credential_lives(template: Template, names: dict[str, str]) -> list[str]:
    """Markdown lines: which Google credential the job holds in this configuration, where it lives, how long."""
    _, _, container = _container(template)
    environment = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
    if contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG not in environment:
        return [f"- a service-account key (google_auth=key) in the Secrets Manager secret {_secret(template, names)}, "
                f"read into the container's environment (`{contract.GOOGLE_CREDENTIALS_JSON}`) at each start; it lives "
                "until it is deleted in GCP (Google keys do not expire unless an organization policy sets "
                "iam.serviceAccountKeyExpiryHours)"]
    wif = json.loads(environment[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG])
    impersonated = "service_account_impersonation_url" in wif
    return [
        "- workload_identity: no Google key exists. The credential configuration in the plain environment "
        f"(`{contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG}`) holds no secret: audience `{wif['audience']}`",
        "- the task role's AWS credentials: served by the ECS container endpoint into the task's memory only; "
        "temporary, rotated by ECS before they expire (hours)",
        "- Google's federated token (STS): in the task's memory only; 1 hour, renewed 3 min 45 s before expiry",
        *(["- the service account's access token (IAM Credentials generateAccessToken): in the task's memory "
           "only; 1 hour, renewed likewise"] if impersonated else []),
    ]


def _secret(template: Template, names: dict[str, str]) -> str:
    """The key's secret, and what encrypts it."""
    secrets = _resources(template, "AWS::SecretsManager::Secret")
    if not secrets:
        _, _, container = _container(template)
        return f"`{container['Secrets'][0]['ValueFrom']}` (not this stack's: its owner chose its key and policy)"
    ((secret_id, secret),) = secrets.items()
    key = secret["Properties"].get("KmsKeyId")
    encrypted = f"the KMS key {_name(names, key['Fn::GetAtt'][0])}" if key else "the AWS-managed key aws/secretsmanager"
    return f"{_name(names, secret_id)} (the template holds only a placeholder value; encrypted with {encrypted})"
