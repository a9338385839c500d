"""Who may read the Google key: the secret's resource policy and, with secret_kms_key, the key policy deny
reading to every principal but the job's execution role and the configured break-glass role.

A local AWS does not enforce policies, so this evaluates the templates' explicit denies the way IAM does
(an explicit Deny in a resource policy or key policy overrides any Allow in the caller's IAM policies:
IAM User Guide, "Policy evaluation logic"), for the principals an auditor asks about.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from dev.key_readers import as_list, statements
from tests.support import synth

BREAK_GLASS = "arn:aws:iam::123456789012:role/security/break-glass"
ADMIN = "arn:aws:iam::123456789012:role/Admin"  # any other principal, e.g. one with secretsmanager:* on *
CDK_DEPLOY = "arn:aws:iam::123456789012:role/cdk-hnb659fds-cfn-exec-role-123456789012-eu-west-1"
READS = {"secretsmanager": ["secretsmanager:GetSecretValue"], "kms": ["kms:Decrypt", "kms:ReEncryptFrom"]}
# What deploying, putting the key in and administering must still be able to do.
MANAGES = {
    "secretsmanager": ["secretsmanager:PutSecretValue", "secretsmanager:UpdateSecret", "secretsmanager:DescribeSecret",
                       "secretsmanager:DeleteSecret", "secretsmanager:PutResourcePolicy", "secretsmanager:TagResource"],
    "kms": ["kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"],
}


def denied(policy: list[dict[str, Any]], action: str, principal: Any) -> bool:
    """Whether an explicit Deny in ``policy`` applies to ``principal`` (an ARN, or a template value such as
    a GetAtt of a role) calling ``action``. Only the operators this stack writes are understood."""
    for s in policy:
        if s["Effect"] != "Deny" or s.get("Principal") not in ({"AWS": "*"}, "*"):
            continue
        if not any(fnmatch.fnmatchcase(action, pattern) for pattern in as_list(s["Action"])):
            continue
        conditions = s.get("Condition", {})
        assert set(conditions) <= {"ArnNotEquals"}, f"condition this test cannot evaluate: {conditions}"
        excepted = [json.dumps(v) for v in as_list(conditions.get("ArnNotEquals", {}).get("aws:PrincipalArn", []))]
        if json.dumps(principal) not in excepted:
            return True
    return False


def policies(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    resources = template["Resources"]
    found: dict[str, list[dict[str, Any]]] = {"secretsmanager": [], "kms": []}
    for resource in resources.values():
        if resource["Type"] == "AWS::SecretsManager::ResourcePolicy":
            found["secretsmanager"] += statements(resource["Properties"]["ResourcePolicy"])
    ((_, secret),) = [(k, r) for k, r in resources.items() if r["Type"] == "AWS::SecretsManager::Secret"]
    key_ref = secret["Properties"].get("KmsKeyId")
    if key_ref is not None:
        found["kms"] = statements(resources[key_ref["Fn::GetAtt"][0]]["Properties"]["KeyPolicy"])
    return found


def execution_role(template: dict[str, Any]) -> dict[str, Any]:
    (definition,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    return definition["Properties"]["ExecutionRoleArn"]


@pytest.mark.parametrize("kms_key", ["false", "true"])
@pytest.mark.parametrize("break_glass", [None, BREAK_GLASS])
def test_only_the_execution_role_and_the_break_glass_role_can_read_the_key(kms_key: str, break_glass: str | None) -> None:
    overrides = {"secret_kms_key": kms_key, **({"break_glass_role_arn": break_glass} if break_glass else {})}
    template = synth(**overrides).to_json()
    found = policies(template)
    services = ["secretsmanager", "kms"] if kms_key == "true" else ["secretsmanager"]
    assert all(found[service] for service in services), "no resource or key policy restricts the key"

    readers = [execution_role(template), *filter(None, [break_glass])]
    others = [ADMIN, CDK_DEPLOY, *([] if break_glass else [BREAK_GLASS])]
    for service in services:
        for action in READS[service]:
            assert [p for p in readers if denied(found[service], action, p)] == []
            assert [p for p in others if not denied(found[service], action, p)] == [], action
        for action in MANAGES[service]:
            assert [p for p in [*readers, *others] if denied(found[service], action, p)] == [], action


def test_the_break_glass_role_decrypts_only_through_secrets_manager_of_this_account() -> None:
    template = synth(secret_kms_key="true", break_glass_role_arn=BREAK_GLASS).to_json()
    (allow,) = [s for s in policies(template)["kms"] if s.get("Principal") == {"AWS": BREAK_GLASS}]
    assert allow["Effect"] == "Allow" and allow["Action"] == "kms:Decrypt"
    assert set(allow["Condition"]["StringEquals"]) == {"kms:ViaService", "kms:CallerAccount"}


def test_an_imported_secret_gets_no_resource_policy_from_the_stack() -> None:
    """Its policy belongs to whoever owns it: the stack must not overwrite it (the audit report says so)."""
    template = synth(google_credentials_secret="etl/google-key").to_json()
    assert not [r for r in template["Resources"].values() if r["Type"] == "AWS::SecretsManager::ResourcePolicy"]
