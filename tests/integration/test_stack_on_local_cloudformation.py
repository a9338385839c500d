"""The whole synthesized stack through LocalStack's CloudFormation: what it creates, and what it cannot.

LocalStack's free edition has no ECS, so the cluster and task definition cannot exist there; the
schedule rule's ECS target and the events role's policy (which names the task definition) are then
refused. The template is created here directly, without `cdk deploy`'s asset publishing, so a Lambda
whose code is a CDK asset (the provider of the custom resource that empties the VPC's default
security group) finds no code in the bootstrap bucket. So: the whole stack is tried and must fail
only for those reasons (anything else is a defect of the template), and the stack with its ECS
resources and asset-backed custom resources left out (what names ECS names a fixed ARN instead, the
schedule rule has no target) must create completely. The custom resource itself is checked in the
template tests (tests/stacks/test_security.py).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support import synth

# What `cdk bootstrap` writes; the template's BootstrapVersion parameter reads it.
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
ECS_LIMIT = ("Unsupported target for Service", "must be in ARN format")
ASSET_LIMIT = ("NoSuchBucket",)  # no `cdk deploy`, so no asset in the bootstrap bucket


def create(aws, template: dict) -> tuple[str, dict[str, str], list[dict]]:
    """Create the stack and wait; its final status, the failed resources with reasons, and its resources."""
    cfn = aws.client("cloudformation")
    name = f"EtlPipeline-dev-{uuid.uuid4().hex[:6]}"
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        if not status.endswith("IN_PROGRESS"):
            break
        time.sleep(2)
    failed = {e["LogicalResourceId"]: e.get("ResourceStatusReason", "")
              for e in cfn.describe_stack_events(StackName=name)["StackEvents"]
              if e["ResourceStatus"] == "CREATE_FAILED" and e["ResourceType"] != "AWS::CloudFormation::Stack"}
    resources = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    return status, failed, resources


def without_ecs(template: dict) -> dict:
    """The template with the ECS resources left out: what names them names a fixed ARN instead, and the
    schedule rule has no ECS target (LocalStack's EventBridge refuses one)."""
    ecs = {k: v["Type"] for k, v in template["Resources"].items() if v["Type"].startswith("AWS::ECS::")}
    stand_ins = {
        "AWS::ECS::Cluster": ("etl-pipeline-dev", "arn:aws:ecs:us-east-1:000000000000:cluster/etl-pipeline-dev"),
        "AWS::ECS::TaskDefinition": ("arn:aws:ecs:us-east-1:000000000000:task-definition/etl-pipeline-dev:1",) * 2,
    }

    def swap(value):
        if isinstance(value, list):
            return [swap(item) for item in value]
        if not isinstance(value, dict):
            return value
        if list(value) == ["Ref"] and value["Ref"] in ecs:
            return stand_ins[ecs[value["Ref"]]][0]
        if list(value) == ["Fn::GetAtt"] and value["Fn::GetAtt"][0] in ecs:
            return stand_ins[ecs[value["Fn::GetAtt"][0]]][1]
        return {key: swap(item) for key, item in value.items()}

    assets = _asset_backed(template["Resources"])
    resources = {}
    for logical_id, resource in template["Resources"].items():
        if logical_id in ecs or logical_id in assets:
            continue
        resource = swap(resource)
        if "DependsOn" in resource:
            resource["DependsOn"] = [d for d in resource["DependsOn"] if d not in ecs and d not in assets]
        if resource["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in resource["Properties"]:
            resource["Properties"].pop("Targets")
        resources[logical_id] = resource
    return {**template, "Resources": resources, "Outputs": swap(template.get("Outputs", {}))}


def _asset_backed(resources: dict) -> set[str]:
    """Lambda functions whose code is a CDK asset in the bootstrap bucket, and the custom resources they back."""
    functions = {k for k, v in resources.items()
                 if v["Type"] == "AWS::Lambda::Function" and "S3Bucket" in v["Properties"].get("Code", {})}
    custom = {k for k, v in resources.items() if v["Type"].startswith("Custom::")
              and v["Properties"].get("ServiceToken", {}).get("Fn::GetAtt", [None])[0] in functions}
    return functions | custom


@pytest.fixture(scope="module")
def aws(local_aws):
    local_aws.client("ssm").put_parameter(Name=BOOTSTRAP_VERSION_PARAMETER, Value="30", Type="String", Overwrite=True)
    return local_aws


def test_the_whole_stack_fails_only_where_localstack_has_no_ecs(aws) -> None:
    status, failed, _ = create(aws, synth().to_json())
    if status == "CREATE_COMPLETE":
        return
    assert status in ("CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"), status
    causes = {k: reason for k, reason in failed.items() if reason}
    assert causes and all(any(limit in reason for limit in ECS_LIMIT + ASSET_LIMIT) for reason in causes.values()), causes
    pytest.xfail(f"LocalStack has no ECS (and no asset was published), so CloudFormation refuses: {causes}")


def test_the_stack_without_ecs_creates_completely(aws) -> None:
    template = without_ecs(synth().to_json())
    kept = {v["Type"] for v in template["Resources"].values()}
    # What is left is most of the stack: network, logs, secret, queue, the alert topic, its key and policy, rules, alarms.
    for kind in ("AWS::KMS::Key", "AWS::SNS::Topic", "AWS::SNS::TopicPolicy", "AWS::CloudWatch::Alarm", "AWS::Events::Rule",
                 "AWS::Logs::MetricFilter", "AWS::SQS::QueuePolicy", "AWS::SecretsManager::Secret", "AWS::EC2::VPC"):
        assert kind in kept, kind

    status, failed, resources = create(aws, template)

    assert status == "CREATE_COMPLETE", failed
    assert {r["LogicalResourceId"] for r in resources} == set(template["Resources"])
