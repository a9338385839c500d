"""The synthesized template holds every resource of the design, wired to each other."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match, Template

from etl_job import contract
from etl_job.config import load_config
from stacks import limits
from stacks.job import SECRET_PLACEHOLDER
from tests.support import build_config, container, logical_id, only, policy_statements, schedule_rule, synth


def role_id(template: Template, name_part: str) -> str:
    (found,) = [k for k in template.find_resources("AWS::IAM::Role") if name_part in k]
    return found


def test_one_of_each_core_resource(dev: Template) -> None:
    for resource_type in (
        "AWS::ECS::Cluster",
        "AWS::ECS::TaskDefinition",
        "AWS::Logs::LogGroup",
        "AWS::SecretsManager::Secret",
        "AWS::SQS::Queue",
        "AWS::EC2::VPC",
        "AWS::EC2::SecurityGroup",
    ):
        dev.resource_count_is(resource_type, 1)
    # task, execution, events, and the CDK's provider that restricts the default security group
    dev.resource_count_is("AWS::IAM::Role", 4)
    dev.resource_count_is("AWS::Events::Rule", 3)  # the schedule, failed tasks and refused launches


def test_task_definition_size_architecture_and_family(dev: Template, prod: Template) -> None:
    dev.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": "256",
            "Memory": "512",
            "Family": "etl-pipeline-dev",
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"},
        },
    )
    prod.has_resource_properties("AWS::ECS::TaskDefinition", {"Cpu": "1024", "Memory": "2048", "Family": "etl-pipeline-prod"})
    synth(architecture="arm64").has_resource_properties(
        "AWS::ECS::TaskDefinition", {"RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}}
    )


def test_container_is_hardened(dev: Template) -> None:
    c = container(dev)
    assert c["Essential"] is True
    # user:group, both non-zero: a bare uid overrides the image's USER and runs with group 0.
    assert c["User"] == limits.CONTAINER_USER and re.fullmatch(r"[1-9]\d*:[1-9]\d*", c["User"])
    assert c["ReadonlyRootFilesystem"] is True
    assert c["StopTimeout"] == 120
    assert c["MountPoints"] == [{"ContainerPath": "/tmp", "ReadOnly": False, "SourceVolume": "scratch"}]
    volumes = only(dev, "AWS::ECS::TaskDefinition")[1]["Properties"]["Volumes"]
    assert volumes == [{"Name": "scratch"}]  # task storage, not a host path or EFS


def test_container_image_is_the_asset_built_from_etl_job(dev: Template) -> None:
    image = container(dev)["Image"]
    assert "Fn::Sub" in image and "container-assets" in image["Fn::Sub"]


def test_environment_is_exactly_the_contract(dev: Template) -> None:
    environment = {e["Name"]: e["Value"] for e in container(dev)["Environment"]}
    assert set(environment) == set(contract.STACK_SET)
    assert environment[contract.LOG_FORMAT] == "json"  # whatever the stage: the metric filter reads JSON lines
    assert contract.GOOGLE_CREDENTIALS_JSON not in environment


# Every value differs from cdk.json's and from the job's own defaults, so a value wired to the wrong
# variable, rendered in another unit or dropped (the job would fall back to its default) shows.
NOT_DEFAULTS = {
    "stage": "prod", "source_table": "other-project.raw.events", "destination_table": "other-project.clean.events",
    "key_column": "event_id", "batch_size": "1000", "concurrency": "8", "log_level": "DEBUG",
    "timeout_minutes": "90", "expected_run_minutes": "30", "max_bytes_billed": "10485760",
}


@pytest.mark.parametrize("overrides", [{}, NOT_DEFAULTS], ids=["cdk.json", "not-defaults"])
def test_the_job_reads_from_the_container_environment_what_the_stack_validated(overrides: dict[str, str]) -> None:
    stack = build_config(**overrides)
    environment = {e["Name"]: e["Value"] for e in container(synth(**overrides))["Environment"]}

    job = load_config(environment)

    read = (str(job.source_table), str(job.destination_table), job.key_column, job.batch_size, job.concurrency,
            job.log_level, job.stage, job.timeout_minutes, job.max_bytes_billed)
    assert read == (stack.source_table, stack.destination_table, stack.key_column, stack.batch_size,
                    stack.concurrency, stack.log_level, stack.stage, stack.timeout_minutes, stack.max_bytes_billed)


def test_optional_sql_is_in_the_environment_only_when_configured() -> None:
    template = synth(source_filter="name LIKE '%Doe%'", transform_sql="transform.sql")
    environment = {e["Name"]: e["Value"] for e in container(template)["Environment"]}
    assert set(environment) == set(contract.STACK_SET) | set(contract.OPTIONAL_SET)
    assert environment[contract.SOURCE_FILTER] == "name LIKE '%Doe%'"
    assert environment[contract.TRANSFORM_SQL].endswith("* REPLACE (REPLACE(name, 'Doe', 'Das') AS name)")


def test_google_key_is_an_ecs_secret_from_the_stack_secret(dev: Template) -> None:
    secret_id = logical_id(dev, "AWS::SecretsManager::Secret")
    assert container(dev)["Secrets"] == [{"Name": contract.GOOGLE_CREDENTIALS_JSON, "ValueFrom": {"Ref": secret_id}}]


def test_created_secret_holds_a_placeholder_and_survives_destroy(dev: Template) -> None:
    secret_id, secret = only(dev, "AWS::SecretsManager::Secret")
    assert secret["DeletionPolicy"] == "Retain"
    assert secret["UpdateReplacePolicy"] == "Retain"
    assert json.loads(secret["Properties"]["SecretString"]) == json.loads(SECRET_PLACEHOLDER)
    assert "private_key" not in json.dumps(dev.to_json())


def test_optional_customer_managed_key_for_the_secret_which_the_execution_role_may_decrypt_with() -> None:
    template = synth(secret_kms_key="true")
    (key_id,) = [k for k in template.find_resources("AWS::KMS::Key") if k.startswith("JobSecretKey")]
    key = template.find_resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"  # the secret outlives the stack, so must its key
    template.has_resource_properties("AWS::SecretsManager::Secret", {"KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]}})
    execution_role = {"Fn::GetAtt": [role_id(template, "ExecutionRole"), "Arn"]}
    (decrypt,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Principal"] == {"AWS": execution_role}]
    assert decrypt["Action"] == "kms:Decrypt"
    assert "secretsmanager." in json.dumps(decrypt["Condition"]["StringEquals"]["kms:ViaService"])
    assert "CKV_AWS_149" not in json.dumps(only(template, "AWS::SecretsManager::Secret")[1].get("Metadata", {}))


def test_existing_secret_by_name_creates_no_secret() -> None:
    template = synth(google_credentials_secret="prod/google-etl-key")
    template.resource_count_is("AWS::SecretsManager::Secret", 0)
    valuefrom = json.dumps(container(template)["Secrets"][0]["ValueFrom"])
    assert "secret:prod/google-etl-key" in valuefrom


def test_existing_secret_by_arn_is_granted_as_given_and_as_a_partial_arn() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:google-etl-key-AbCdEf"
    template = synth(google_credentials_secret=arn)
    template.resource_count_is("AWS::SecretsManager::Secret", 0)
    assert container(template)["Secrets"][0]["ValueFrom"] == arn
    execution = role_id(template, "ExecutionRole")
    secret_statements = [s for s in policy_statements(template, execution) if "secretsmanager:GetSecretValue" in s["Action"]]
    # Complete or partial cannot be told from the text: both readings are granted.
    assert [s["Resource"] for s in secret_statements] == [[arn, f"{arn}-??????"]]


def test_log_group_retention_and_removal_policy(dev: Template, prod: Template) -> None:
    _, dev_logs = only(dev, "AWS::Logs::LogGroup")
    assert dev_logs["Properties"]["RetentionInDays"] == 14
    assert dev_logs["DeletionPolicy"] == "Delete"
    _, prod_logs = only(prod, "AWS::Logs::LogGroup")
    assert prod_logs["Properties"]["RetentionInDays"] == 365
    assert prod_logs["DeletionPolicy"] == "Retain"
    assert "KmsKeyId" not in prod_logs["Properties"]


def test_container_logs_go_to_the_log_group(dev: Template) -> None:
    log_group_id = logical_id(dev, "AWS::Logs::LogGroup")
    options = container(dev)["LogConfiguration"]
    assert options["LogDriver"] == "awslogs"
    assert options["Options"]["awslogs-group"] == {"Ref": log_group_id}


def test_optional_customer_managed_key_for_logs() -> None:
    template = synth(log_kms_key="true")
    (key_id,) = [k for k in template.find_resources("AWS::KMS::Key") if k.startswith("JobLogsKey")]
    key = template.find_resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    template.has_resource_properties("AWS::Logs::LogGroup", {"KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]}})
    (logs_statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if "Service" in s["Principal"]]
    assert "logs." in json.dumps(logs_statement["Principal"])
    assert ":log-group:*" in json.dumps(logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])


def test_default_network_has_public_subnets_and_no_nat(dev: Template) -> None:
    dev.resource_count_is("AWS::EC2::NatGateway", 0)
    dev.resource_count_is("AWS::EC2::EIP", 0)
    subnets = dev.find_resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())
    dev.resource_count_is("AWS::EC2::InternetGateway", 1)


def test_security_group_has_no_ingress_and_https_egress_only(dev: Template) -> None:
    _, group = only(dev, "AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in group["Properties"]
    dev.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)
    assert group["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "HTTPS to Google and AWS APIs", "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}
    ]


def ecs_parameters(template: Template) -> dict:
    (target,) = schedule_rule(template)[1]["Properties"]["Targets"]
    return target["EcsParameters"]


def test_rule_runs_this_task_on_fargate_with_public_ip(dev: Template) -> None:
    rule_id, rule = schedule_rule(dev)
    props = rule["Properties"]
    assert props["ScheduleExpression"] == "cron(0 5 * * ? *)"
    assert props["State"] == "ENABLED"
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [logical_id(dev, "AWS::ECS::Cluster"), "Arn"]}
    params = target["EcsParameters"]
    assert params["TaskDefinitionArn"] == {"Ref": logical_id(dev, "AWS::ECS::TaskDefinition")}
    assert params["LaunchType"] == "FARGATE"
    assert params["TaskCount"] == 1
    assert params["PropagateTags"] == "TASK_DEFINITION"
    network = params["NetworkConfiguration"]["AwsVpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    assert network["SecurityGroups"] == [{"Fn::GetAtt": [logical_id(dev, "AWS::EC2::SecurityGroup"), "GroupId"]}]
    assert sorted(s["Ref"] for s in network["Subnets"]) == sorted(dev.find_resources("AWS::EC2::Subnet"))


def test_rule_retries_then_dead_letters_to_an_encrypted_queue(dev: Template) -> None:
    (target,) = schedule_rule(dev)[1]["Properties"]["Targets"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": limits.LAUNCH_RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": 3600}
    queue_id, queue = only(dev, "AWS::SQS::Queue")
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_schedule_is_configurable_and_can_be_paused() -> None:
    template = synth(schedule="rate(6 hours)", schedule_enabled="false")
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(6 hours)", "State": "DISABLED"})
    template.resource_count_is("AWS::ECS::TaskDefinition", 1)  # paused, nothing destroyed


def test_events_role_may_only_run_this_task_and_pass_its_two_roles(dev: Template) -> None:
    events_role = role_id(dev, "EventsRole")
    role = dev.find_resources("AWS::IAM::Role")[events_role]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}
    assert "ManagedPolicyArns" not in role["Properties"]
    by_action = {json.dumps(s["Action"]): s for s in policy_statements(dev, events_role)}
    run_task = by_action['"ecs:RunTask"']
    assert run_task["Resource"] == {"Ref": logical_id(dev, "AWS::ECS::TaskDefinition")}
    assert run_task["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [logical_id(dev, "AWS::ECS::Cluster"), "Arn"]}}}
    pass_role = by_action['"iam:PassRole"']
    assert sorted(r["Fn::GetAtt"][0] for r in pass_role["Resource"]) == sorted(
        [role_id(dev, "ExecutionRole"), role_id(dev, "TaskRole")]
    )
    assert set(by_action) == {'"ecs:RunTask"', '"iam:PassRole"', '"ecs:TagResource"'}


def test_execution_role_reads_only_this_secret_and_writes_only_this_log_group(dev: Template) -> None:
    statements = policy_statements(dev, role_id(dev, "ExecutionRole"))
    by_action = {json.dumps(sorted(s["Action"]) if isinstance(s["Action"], list) else [s["Action"]]): s for s in statements}
    assert by_action['["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]']["Resource"] == {
        "Ref": logical_id(dev, "AWS::SecretsManager::Secret")
    }
    assert by_action['["logs:CreateLogStream", "logs:PutLogEvents"]']["Resource"] == {
        "Fn::GetAtt": [logical_id(dev, "AWS::Logs::LogGroup"), "Arn"]
    }
    pull = by_action['["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]']
    assert "container-assets" in json.dumps(pull["Resource"])
    assert set(by_action) == {
        '["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]',
        '["logs:CreateLogStream", "logs:PutLogEvents"]',
        '["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]',
        '["ecr:GetAuthorizationToken"]',  # account-wide by design of ECR; no resource to scope to
    }


def test_task_role_may_only_look_at_tasks_in_this_cluster(dev: Template) -> None:
    (statement,) = policy_statements(dev, role_id(dev, "TaskRole"))
    assert sorted(statement["Action"]) == ["ecs:DescribeTasks", "ecs:ListTasks"]
    assert statement["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [logical_id(dev, "AWS::ECS::Cluster"), "Arn"]}}}


def test_every_taggable_resource_carries_project_and_stage(dev: Template) -> None:
    untagged_types = {
        "AWS::EC2::SubnetRouteTableAssociation", "AWS::EC2::Route", "AWS::EC2::VPCGatewayAttachment",
        "AWS::IAM::Policy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy", "AWS::Logs::MetricFilter",
        "AWS::SecretsManager::ResourcePolicy", "Custom::VpcRestrictDefaultSG",
    }
    for resource_id, resource in dev.to_json()["Resources"].items():
        # The CDK's custom-resource provider is a plain CfnResource, which Tags.of cannot reach.
        if resource["Type"] in untagged_types or resource_id.startswith("CustomVpcRestrictDefaultSG"):
            continue
        tags = {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}
        assert tags.get("project") == "etl-pipeline" and tags.get("stage") == "dev", resource_id


def test_outputs_give_what_an_operator_needs(dev: Template) -> None:
    outputs = dev.to_json()["Outputs"]
    for name in ("ClusterName", "TaskDefinitionArn", "LogGroupName", "SecretArn", "SubnetIds", "SecurityGroupId", "RunNowCommand"):
        assert name in outputs, name
    command = json.dumps(outputs["RunNowCommand"]["Value"])
    # The stack's own revision (a Ref of the task definition is its ARN with the revision), never the family.
    definition = logical_id(dev, "AWS::ECS::TaskDefinition")
    assert f'" --task-definition ", {{"Ref": "{definition}"}}' in command
    assert "--task-definition etl-pipeline-dev" not in command
    for part in ("aws ecs run-task", "--launch-type FARGATE", "assignPublicIp=ENABLED"):
        assert part in command


def test_existing_vpc_and_subnets_are_used_without_creating_a_network() -> None:
    template = synth(vpc_id="vpc-0123456789abcdef0", subnet_ids="subnet-0123456789abcdef0,subnet-0fedcba9876543210", assign_public_ip="false")
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::Subnet", 0)
    template.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": "vpc-0123456789abcdef0"})
    network = ecs_parameters(template)["NetworkConfiguration"]["AwsVpcConfiguration"]
    assert network["Subnets"] == ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
    assert network["AssignPublicIp"] == "DISABLED"


def test_spot_capacity_uses_a_capacity_provider_strategy() -> None:
    template = synth(capacity="spot")
    params = ecs_parameters(template)
    assert "LaunchType" not in params
    assert params["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    template.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations", {"CapacityProviders": Match.array_with(["FARGATE_SPOT"])}
    )


def test_the_default_security_group_is_restricted(dev: Template) -> None:
    """Security Hub EC2.2: the VPC's default security group allows no traffic (the CDK revokes its rules)."""
    ((_, restrict),) = dev.find_resources("Custom::VpcRestrictDefaultSG").items()
    vpc_id = logical_id(dev, "AWS::EC2::VPC")
    assert restrict["Properties"]["DefaultSecurityGroupId"] == {"Fn::GetAtt": [vpc_id, "DefaultSecurityGroup"]}


def test_flow_logs_go_to_an_encrypted_expiring_bucket_in_prod_only(dev: Template, prod: Template) -> None:
    dev.resource_count_is("AWS::EC2::FlowLog", 0)
    ((_, flow_log),) = prod.find_resources("AWS::EC2::FlowLog").items()
    bucket_id, bucket = only(prod, "AWS::S3::Bucket")
    assert flow_log["Properties"]["LogDestinationType"] == "s3"
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    assert flow_log["Properties"]["ResourceId"] == {"Ref": logical_id(prod, "AWS::EC2::VPC")}
    assert bucket_id in json.dumps(flow_log["Properties"]["LogDestination"])
    properties = bucket["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert properties["LifecycleConfiguration"]["Rules"] == [{"ExpirationInDays": 365, "Status": "Enabled"}]
    assert bucket["DeletionPolicy"] == "Retain"
