"""The fan-out (shards > 1): the schedule starts a Step Functions state machine that runs one task per shard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from etl_job import contract
from stacks import limits
from stacks.fanout import shard_timeout_seconds
from tests.support import logical_id, only, policy_statements, schedule_rule, synth

SHARDS = {"shards": "8", "max_parallel_shards": "3"}


def render(value: Any) -> str:
    """A CloudFormation value as text, references written as <Ref> and <GetAtt.Attribute>."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(part) for part in parts)
    raise AssertionError(f"unexpected value {value}")


def asl(template: Template) -> dict:
    """The state machine's definition (Amazon States Language) with references rendered."""
    _, machine = only(template, "AWS::StepFunctions::StateMachine")
    return json.loads(render(machine["Properties"]["DefinitionString"]))


def run_shard(definition: dict) -> dict:
    return definition["States"]["Shards"]["ItemProcessor"]["States"]["RunShard"]


@pytest.fixture(scope="module")
def sharded() -> Template:
    return synth(**SHARDS)


def test_one_shard_keeps_the_direct_rule_to_ecs_and_has_no_state_machine(dev: Template) -> None:
    dev.resource_count_is("AWS::StepFunctions::StateMachine", 0)
    (target,) = schedule_rule(dev)[1]["Properties"]["Targets"]
    assert "EcsParameters" in target


def test_the_schedule_starts_the_state_machine_with_every_shard_and_keeps_retries_and_dead_letters(sharded: Template) -> None:
    machine_id, machine = only(sharded, "AWS::StepFunctions::StateMachine")
    (target,) = schedule_rule(sharded)[1]["Properties"]["Targets"]
    assert "EcsParameters" not in target
    assert target["Arn"] == {"Ref": machine_id}
    assert json.loads(target["Input"]) == {"shards": list(range(8))}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == limits.LAUNCH_RETRY_ATTEMPTS
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [logical_id(sharded, "AWS::SQS::Queue"), "Arn"]}}
    assert machine["Properties"]["StateMachineType"] == "STANDARD"


def test_a_map_over_the_shards_runs_this_task_definition_once_per_shard_and_waits_for_it(sharded: Template) -> None:
    definition = asl(sharded)
    shards = definition["States"]["Shards"]
    assert (shards["Type"], shards["ItemsPath"], shards["MaxConcurrency"]) == ("Map", "$.shards", 3)
    assert shards["ItemSelector"] == {"index.$": "$$.Map.Item.Value"}
    task = run_shard(definition)
    assert task["Resource"] == "arn:<AWS::Partition>:states:::ecs:runTask.sync"
    parameters = task["Parameters"]
    assert parameters["Cluster"] == f"<{logical_id(sharded, 'AWS::ECS::Cluster')}.Arn>"
    assert parameters["TaskDefinition"] == f"<{logical_id(sharded, 'AWS::ECS::TaskDefinition')}>"  # this revision
    assert parameters["LaunchType"] == "FARGATE" and parameters["PropagateTags"] == "TASK_DEFINITION"
    assert parameters["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED"


def test_each_task_gets_its_shard_as_exactly_the_contracts_overrides(sharded: Template) -> None:
    (override,) = run_shard(asl(sharded))["Parameters"]["Overrides"]["ContainerOverrides"]
    assert override["Name"] == limits.CONTAINER_NAME
    environment = {e["Name"]: e for e in override["Environment"]}
    assert set(environment) == set(contract.SHARD_SET)
    assert environment[contract.SHARD_INDEX]["Value.$"] == "States.Format('{}', $.index)"
    assert environment[contract.SHARD_COUNT]["Value"] == "8"


def test_launch_failures_are_retried_with_backoff_and_each_shard_has_a_timeout(sharded: Template) -> None:
    task = run_shard(asl(sharded))
    (retry,) = task["Retry"]
    assert retry == {
        "ErrorEquals": ["ECS.AmazonECSException", "AmazonECS.Unknown"],
        "IntervalSeconds": limits.SHARD_LAUNCH_RETRY_INTERVAL_SECONDS,
        "MaxAttempts": limits.SHARD_LAUNCH_RETRY_ATTEMPTS,
        "BackoffRate": 2,
        "JitterStrategy": "FULL",
    }
    assert task["TimeoutSeconds"] == shard_timeout_seconds(240) == 240 * 60 + limits.STOP_TIMEOUT_SECONDS + 600
    assert run_shard(asl(synth(timeout_minutes="30", expected_run_minutes="30", **SHARDS)))["TimeoutSeconds"] == 30 * 60 + 720


def test_a_failed_shard_is_caught_and_one_alert_goes_to_the_alert_topic(sharded: Template) -> None:
    definition = asl(sharded)
    (catch,) = run_shard(definition)["Catch"]
    assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ShardFailed"}
    alert = definition["States"]["AlertFailedShards"]
    assert alert["Resource"] == "arn:<AWS::Partition>:states:::sns:publish"
    assert alert["Parameters"]["TopicArn"] == f"<{logical_id(sharded, 'AWS::SNS::Topic')}>"
    message = alert["Parameters"]["Message.$"]
    assert "of 8 shards failed" in message and "States.JsonToString($.failed)" in message
    assert "make run-now STAGE=dev SHARD=" in message
    # Failed results are listed (with a JSONPath filter) only once one exists: a filter matching nothing fails.
    assert definition["States"]["AnyShardFailed"]["Choices"] == [
        {"Variable": "$.results_json", "StringMatches": '*"failed":true*', "Next": "ListFailures"}
    ]
    assert definition["States"]["ListFailures"]["Next"] == "AlertFailedShards"
    assert definition["States"]["AlertFailedShards"]["Next"] == "ShardsFailed"
    assert definition["States"]["ShardsFailed"]["Type"] == "Fail"


def test_spot_and_an_existing_network_reach_the_task_state() -> None:
    parameters = run_shard(asl(synth(capacity="spot", vpc_id="vpc-0123456789abcdef0",
                                     subnet_ids="subnet-0123456789abcdef0", assign_public_ip="false", **SHARDS)))["Parameters"]
    assert "LaunchType" not in parameters
    assert parameters["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}]
    network = parameters["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == ["subnet-0123456789abcdef0"]
    assert network.get("AssignPublicIp", "DISABLED") == "DISABLED"  # RunTask's default


def test_every_execution_is_logged_to_the_jobs_log_group_without_tracing(sharded: Template) -> None:
    _, machine = only(sharded, "AWS::StepFunctions::StateMachine")
    logging = machine["Properties"]["LoggingConfiguration"]
    assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is True
    (destination,) = logging["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": [logical_id(sharded, "AWS::Logs::LogGroup"), "Arn"]}
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": False}


def test_outputs_name_the_state_machine_and_how_to_start_it(sharded: Template) -> None:
    outputs = sharded.to_json()["Outputs"]
    machine_id, _ = only(sharded, "AWS::StepFunctions::StateMachine")
    assert outputs["StateMachineArn"]["Value"] == {"Ref": machine_id}
    assert outputs["ShardCount"]["Value"] == "8"
    command = render(outputs["RunNowCommand"]["Value"])
    assert command == f"aws stepfunctions start-execution --state-machine-arn <{machine_id}> --input '{{\"shards\":[0,1,2,3,4,5,6,7]}}'"


def test_the_state_machine_role_trusts_only_step_functions_of_this_account(sharded: Template) -> None:
    (role_id,) = [k for k in sharded.find_resources("AWS::IAM::Role") if k.startswith("FanOutRole")]
    (statement,) = sharded.find_resources("AWS::IAM::Role")[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "states.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert policy_statements(sharded, role_id), "the role holds the state machine's permissions"
