"""The audit report's section on who can do what: each IAM role's grants, each resource policy, and what encrypts what.

Read from the synthesized template. `<Path>` is a resource of the stack at that construct path (a Ref: its ARN
or name; `.Arn`: its ARN); `${AWS::...}` is filled in at deploy time. tests/stacks/test_security.py asserts the
least-privilege rules on the same templates.
"""

from __future__ import annotations

import json
from typing import Any

from dev.key_readers import Template, as_list, statements

IDENTITY_POLICIES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
# Resource types that carry a resource-based policy, and the property that holds it.
RESOURCE_POLICIES = {
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::Events::EventBusPolicy": "Statement",
    "AWS::Logs::ResourcePolicy": "PolicyDocument",
    "AWS::ECR::Repository": "RepositoryPolicyText",
}
_ENCRYPTED = ("AWS::Logs::LogGroup", "AWS::SNS::Topic", "AWS::SQS::Queue")


def readable(value: Any, names: dict[str, str]) -> str:
    """A template value with Refs and GetAtts shown as <Construct/Path> and pseudo parameters as ${AWS::...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(readable(v, names) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{names[argument]}>" if argument in names else f"${{{argument}}}"
        if function == "Fn::GetAtt":
            return f"<{names.get(argument[0], argument[0])}>.{argument[1]}"
        if function == "Fn::Join":
            return str(argument[0]).join(readable(v, names) for v in argument[1])
        if function == "Fn::Sub":
            return argument if isinstance(argument, str) else str(argument[0])
    return json.dumps(value)


def principal_text(principal: Any, names: dict[str, str]) -> str:
    """Who a statement's Principal names."""
    if principal == "*":
        return "anyone (*)"
    if isinstance(principal, dict):
        return "; ".join(f"{kind} {readable(value, names)}" for kind, value in principal.items())
    return readable(principal, names)


def statement_text(statement: dict[str, Any], names: dict[str, str], with_principal: bool = False) -> str:
    """One statement as a sentence: effect, (principal,) actions, resources, conditions."""
    text = f"**{statement['Effect']}** "
    if with_principal:
        text += f"{principal_text(statement.get('Principal'), names)}: "
    actions = statement.get("Action", statement.get("NotAction"))
    text += ("all but " if "NotAction" in statement else "") + ", ".join(f"`{a}`" for a in as_list(actions))
    text += " on " + ", ".join(f"`{readable(r, names)}`" for r in as_list(statement.get("Resource", "*")))
    for operator, conditions in statement.get("Condition", {}).items():
        text += "".join(f" if {operator} `{key}` = `{readable(value, names)}`" for key, value in conditions.items())
    return text


def role_lines(template: Template, names: dict[str, str], logical_id: str) -> list[str]:
    """A role: who may assume it and every statement granted to it (inline, attached, managed)."""
    resources = template["Resources"]
    properties = resources[logical_id]["Properties"]
    trusted = [principal_text(s.get("Principal"), names) for s in statements(properties["AssumeRolePolicyDocument"])]
    granted = [s for policy in properties.get("Policies", []) for s in statements(policy["PolicyDocument"])]
    for policy in resources.values():
        if policy["Type"] in IDENTITY_POLICIES and {"Ref": logical_id} in policy["Properties"].get("Roles", []):
            granted += statements(policy["Properties"]["PolicyDocument"])
    lines = [f"#### Role `{names.get(logical_id, logical_id)}` ({logical_id})", f"Assumed by: {', '.join(trusted)}", ""]
    lines += [f"- {statement_text(s, names)}" for s in granted] or ["- nothing"]
    lines += [f"- managed policy `{readable(arn, names)}`" for arn in properties.get("ManagedPolicyArns", [])]
    return [*lines, ""]


def resource_policy_lines(template: Template, names: dict[str, str]) -> list[str]:
    """Every resource-based policy: who it admits, to do what, on what conditions."""
    lines: list[str] = []
    for logical_id, resource in template["Resources"].items():
        key = RESOURCE_POLICIES.get(resource["Type"])
        if key and key in resource.get("Properties", {}):
            lines.append(f"#### Resource policy of `{names.get(logical_id, logical_id)}` ({resource['Type']})")
            lines += [f"- {statement_text(s, names, with_principal=True)}" for s in statements(resource["Properties"][key])]
            lines.append("")
    return lines


def encryption_line(kind: str, name: str, properties: dict[str, Any], names: dict[str, str]) -> str | None:
    """What encrypts one resource at rest (None: a type this section does not describe)."""
    if kind == "AWS::SecretsManager::Secret":
        by = readable(properties["KmsKeyId"], names) if "KmsKeyId" in properties else "the AWS-managed key aws/secretsmanager"
        return f"- Secret `{name}`: the template holds only a placeholder value; encrypted with {by}"
    if kind == "AWS::KMS::Key":
        rotation = "rotated yearly" if properties.get("EnableKeyRotation") else "NOT rotated"
        return f"- KMS key `{name}` ({properties.get('Description', '')}), {rotation}"
    if kind in _ENCRYPTED:
        key = properties.get("KmsKeyId") or properties.get("KmsMasterKeyId")
        how = readable(key, names) if key else ("SQS-managed keys" if properties.get("SqsManagedSseEnabled") else "the service's own key")
        return f"- {kind.split('::')[1]} `{name}`: encrypted at rest with {how}"
    return None


def who_can_do_what(template: Template, names: dict[str, str]) -> list[str]:
    """Markdown lines for one configuration: keys and encryption, then each role, then each resource policy."""
    resources = template["Resources"]
    keys = [encryption_line(r["Type"], names.get(k, k), r.get("Properties", {}), names) for k, r in resources.items()]
    lines = ["#### Keys and encryption at rest", "", *[line for line in keys if line], ""]
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            lines += role_lines(template, names, logical_id)
    return lines + resource_policy_lines(template, names)
