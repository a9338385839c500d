"""`make run-now` / `make stop-runs` against a local AWS API (moto server: AWS itself cannot run here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.support import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": str(tmp_path_factory.mktemp("home")),
    }
    yield env
    server.stop()


def client(aws: dict[str, str], service: str):
    return boto3.client(
        service,
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def deployed(aws: dict[str, str]) -> dict[str, str]:
    """A cluster, a task definition and a stack whose outputs name them, as `make deploy` leaves them."""
    ec2 = client(aws, "ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})  # as the stack's VPC has
    subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"] for i in (0, 1)]
    group = ec2.create_security_group(GroupName="etl", Description="etl", VpcId=vpc_id)["GroupId"]
    ecs = client(aws, "ecs")
    ecs.create_cluster(clusterName="etl-cluster")
    revisions = [
        ecs.register_task_definition(
            family="etl-pipeline-dev",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "etl", "image": image, "essential": True, "memory": 512}],  # moto needs memory here
        )["taskDefinition"]["taskDefinitionArn"]
        # The stack's revision, then one someone registered later in the same family (say, with another image).
        for image in ("etl:latest", "someone-elses:latest")
    ]
    outputs = {
        "ClusterName": "etl-cluster",
        "TaskDefinitionArn": revisions[0],
        "TaskDefinitionFamily": "etl-pipeline-dev",
        "SubnetIds": ",".join(subnets),
        "SecurityGroupId": group,
        "LogGroupName": "EtlPipeline-dev-JobLogs",
        "Capacity": "on-demand",
        "AssignPublicIp": "ENABLED",
    }
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client(aws, "cloudformation").create_stack(StackName="EtlPipeline-dev", TemplateBody=json.dumps(template))
    return outputs


def runs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "ops.runs", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_start_runs_the_task_from_the_stack_outputs_and_stop_stops_it(aws: dict[str, str], deployed: dict[str, str]) -> None:
    started = runs(aws, "start", "--stage", "dev")
    assert started.returncode == 0, started.stderr
    ecs = client(aws, "ecs")
    (task_arn,) = ecs.list_tasks(cluster="etl-cluster", family="etl-pipeline-dev")["taskArns"]
    assert f"started {task_arn}" in started.stdout
    assert "aws logs tail EtlPipeline-dev-JobLogs --follow" in started.stdout
    (task,) = ecs.describe_tasks(cluster="etl-cluster", tasks=[task_arn])["tasks"]
    assert task["startedBy"] == "run-now"
    # The stack's own revision (TaskDefinitionArn), not the family's latest: starting a revision someone else
    # registered would run their code with the job's secret.
    assert task["taskDefinitionArn"] == deployed["TaskDefinitionArn"]
    assert task["taskDefinitionArn"].endswith("task-definition/etl-pipeline-dev:1")

    stopped = runs(aws, "stop", "--stage", "dev")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping {task_arn}" in stopped.stdout
    (task,) = ecs.describe_tasks(cluster="etl-cluster", tasks=[task_arn])["tasks"]
    assert task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == "stopped by make stop-runs"


def test_a_stage_that_is_not_deployed_is_named(aws: dict[str, str], deployed: dict[str, str]) -> None:
    result = runs(aws, "start", "--stage", "prod")
    assert result.returncode == 1
    assert "stack EtlPipeline-prod is not deployed in us-east-1" in result.stderr
    assert "make deploy STAGE=prod" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_credentials_is_a_one_line_error(tmp_path: Path) -> None:
    result = runs({"HOME": str(tmp_path), "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}, "start")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no AWS credentials found: run `aws configure` or set AWS_PROFILE, then retry"


def test_no_region_is_a_one_line_error(tmp_path: Path) -> None:
    result = runs({"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}, "stop")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no AWS region set: export AWS_DEFAULT_REGION=<the stack's region>, then retry"


@pytest.fixture(scope="module")
def sharded(aws: dict[str, str], deployed: dict[str, str]) -> dict[str, str]:
    """The same job deployed with shards = 4: a state machine, and the outputs the stack then adds."""
    machine = client(aws, "stepfunctions").create_state_machine(
        name="etl-pipeline-staging",
        definition=json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/fan-out",
    )["stateMachineArn"]
    outputs = {**deployed, "StateMachineArn": machine, "ShardCount": "4"}
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client(aws, "cloudformation").create_stack(StackName="EtlPipeline-staging", TemplateBody=json.dumps(template))
    return outputs


def executions(aws: dict[str, str], machine: str) -> list[dict]:
    sfn = client(aws, "stepfunctions")
    return [sfn.describe_execution(executionArn=e["executionArn"])
            for e in sfn.list_executions(stateMachineArn=machine)["executions"]]


def test_with_shards_run_now_starts_an_execution_of_every_shard_or_of_one_and_prints_its_console_link(
    aws: dict[str, str], sharded: dict[str, str]
) -> None:
    every = runs(aws, "start", "--stage", "staging")
    one = runs(aws, "start", "--stage", "staging", "--shard=2")

    assert every.returncode == 0 and one.returncode == 0, every.stderr + one.stderr
    by_input = {e["input"]: e for e in executions(aws, sharded["StateMachineArn"])}
    assert set(by_input) == {'{"shards": [0, 1, 2, 3]}', '{"shards": [2]}'}
    for result, execution in ((every, by_input['{"shards": [0, 1, 2, 3]}']), (one, by_input['{"shards": [2]}'])):
        arn = execution["executionArn"]
        assert f"started {arn}" in result.stdout
        assert (f"console:    https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1"
                f"#/v2/executions/details/{arn}") in result.stdout
    assert "(4 shards)" in every.stdout and "(shard 2 of 4)" in one.stdout
    assert client(aws, "ecs").list_tasks(cluster="etl-cluster", desiredStatus="RUNNING")["taskArns"] == []

    stopped = runs(aws, "stop", "--stage", "staging")

    assert stopped.returncode == 0, stopped.stderr
    assert {e["status"] for e in executions(aws, sharded["StateMachineArn"])} == {"ABORTED"}
    assert stopped.stdout.count("stopping execution") == 2


@pytest.mark.parametrize(
    ("stage", "shard", "message"),
    [
        ("staging", "4", "error: SHARD=4 is not a shard of stage staging: use 0 to 3, or leave SHARD out for all"),
        ("staging", "-1", "error: SHARD=-1 is not a shard of stage staging: use 0 to 3, or leave SHARD out for all"),
        ("dev", "1", "error: SHARD=1: stage dev runs as one task (shards = 1); leave SHARD out"),
    ],
)
def test_a_shard_that_does_not_exist_is_a_one_line_error(
    aws: dict[str, str], sharded: dict[str, str], stage: str, shard: str, message: str
) -> None:
    result = runs(aws, "start", "--stage", stage, f"--shard={shard}")
    assert result.returncode == 1
    assert result.stderr.strip() == message
