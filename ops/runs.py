"""Start or stop runs of a deployed stage: `python -m ops.runs start|stop [--stage STAGE] [--shard K]`.

With shards > 1 a run is a Step Functions execution: ``start`` starts one (every shard, or only
shard K to rerun a failed one) and prints its console link; ``stop`` stops the running executions
and every running task of the job.

Reads everything it needs from the stack's outputs, so it works for any account and region the
AWS credentials point at. Errors a user can cause (no credentials, no region, stack not deployed)
print one line and exit 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

from stacks import limits
from stacks.launch import Launch


class RunsError(Exception):
    """A problem the user can fix; the message says how."""


def stack_outputs(stage: str) -> dict[str, str]:
    """The CloudFormation outputs of ``EtlPipeline-<stage>``."""
    name = f"{limits.STACK_NAME_PREFIX}-{stage}"
    client = boto3.client("cloudformation")
    try:
        (stack,) = client.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            raise RunsError(
                f"stack {name} is not deployed in {client.meta.region_name}: deploy it with `make deploy STAGE={stage}` "
                "or point AWS_DEFAULT_REGION at the region it lives in"
            ) from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def start(stage: str, shard: int | None = None) -> str:
    """Start one run now, exactly as the schedule would (or only ``shard``); return the task or execution ARN."""
    outputs = stack_outputs(stage)
    if "StateMachineArn" in outputs:
        return _start_execution(stage, outputs, shard)
    if shard not in (None, 0):
        raise RunsError(f"SHARD={shard}: stage {stage} runs as one task (shards = 1); leave SHARD out")
    # Launched as the schedule launches it (stacks/launch.py).
    launch = Launch.from_outputs(outputs["Capacity"], outputs["AssignPublicIp"])
    response = boto3.client("ecs").run_task(
        cluster=outputs["ClusterName"],
        # The stack's own revision: the family's latest may be one someone else registered (with the job's roles
        # and secret), and starting it would run their code with the key.
        taskDefinition=outputs["TaskDefinitionArn"],
        count=1,
        propagateTags="TASK_DEFINITION",
        startedBy="run-now",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": outputs["SubnetIds"].split(","),
                "securityGroups": [outputs["SecurityGroupId"]],
                "assignPublicIp": launch.public_ip,
            }
        },
        **launch.run_task_parameters(),
    )
    if response.get("failures") or not response.get("tasks"):
        reasons = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')}".strip() for f in response.get("failures", []))
        raise RunsError(f"ECS did not start the task: {reasons or 'no reason given'}")
    task_arn = response["tasks"][0]["taskArn"]
    print(f"started {task_arn}")
    print(f"follow it:  aws logs tail {outputs['LogGroupName']} --follow")
    print(f"stop it:    make stop-runs STAGE={stage}")
    return task_arn


def _start_execution(stage: str, outputs: dict[str, str], shard: int | None) -> str:
    count = int(outputs["ShardCount"])
    if shard is not None and not 0 <= shard < count:
        raise RunsError(f"SHARD={shard} is not a shard of stage {stage}: use 0 to {count - 1}, or leave SHARD out for all")
    client = boto3.client("stepfunctions")
    which = f"shard-{shard}" if shard is not None else "all"
    execution_arn = client.start_execution(
        stateMachineArn=outputs["StateMachineArn"],
        name=f"run-now-{which}-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}",
        input=json.dumps({"shards": [shard] if shard is not None else list(range(count))}),
    )["executionArn"]
    region = client.meta.region_name
    print(f"started {execution_arn} ({f'shard {shard} of {count}' if shard is not None else f'{count} shards'})")
    print(f"console:    https://{region}.console.aws.amazon.com/states/home?region={region}"
          f"#/v2/executions/details/{execution_arn}")
    print(f"follow it:  aws logs tail {outputs['LogGroupName']} --follow")
    print(f"stop it:    make stop-runs STAGE={stage}")
    return execution_arn


def stop(stage: str) -> list[str]:
    """Stop the stage's running executions and every running task of its job; the job settles on SIGTERM."""
    outputs = stack_outputs(stage)
    if "StateMachineArn" in outputs:
        client = boto3.client("stepfunctions")
        pages = client.get_paginator("list_executions").paginate(stateMachineArn=outputs["StateMachineArn"],
                                                                   statusFilter="RUNNING")
        for execution in (e for page in pages for e in page["executions"]):
            client.stop_execution(executionArn=execution["executionArn"], cause="stopped by make stop-runs")
            print(f"stopping execution {execution['executionArn']}")
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster=outputs["ClusterName"], family=outputs["TaskDefinitionFamily"], desiredStatus="RUNNING")["taskArns"]
    for arn in arns:
        ecs.stop_task(cluster=outputs["ClusterName"], task=arn, reason="stopped by make stop-runs")
        print(f"stopping {arn} (the job gets SIGTERM and {limits.STOP_TIMEOUT_SECONDS} s to settle)")
    if not arns:
        print(f"no run of {outputs['TaskDefinitionFamily']} is going")
    return arns


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.runs", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--shard", type=int, help="start: rerun only this shard (shards > 1)")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            start(args.stage, args.shard)
        else:
            stop(args.stage)
    except RunsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except NoCredentialsError:
        print("error: no AWS credentials found: run `aws configure` or set AWS_PROFILE, then retry", file=sys.stderr)
        return 1
    except NoRegionError:
        print("error: no AWS region set: export AWS_DEFAULT_REGION=<the stack's region>, then retry", file=sys.stderr)
        return 1
    except EndpointConnectionError as error:
        print(f"error: cannot reach AWS ({error}); check the network or AWS_ENDPOINT_URL", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as error:
        print(f"error: AWS refused the request: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
