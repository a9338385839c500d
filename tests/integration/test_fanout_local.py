"""The fan-out's state machine definition, as synthesized, run on LocalStack's Step Functions engine.

The ECS RunTask integration is mocked per scenario (LocalStack's mocked service integrations, the
Step Functions Local mock file format, ``SFN_MOCK_CONFIG``): LocalStack has no ECS. Everything else
runs for real on LocalStack: the Map, retries, catch, Choice and Pass states, the intrinsic
functions and JSONPath filters, and the SNS publish of the alert, read back from an SQS queue
subscribed to the topic.

Limits of this stand-in, and what is checked instead:
* LocalStack picks a mocked response by the state's retry count only, so every shard of one
  execution meets the same scenario. Each scenario therefore runs the shards it names (as
  ``make run-now SHARD=k`` does), several at once where the alert must name more than one.
* A mocked integration answers at once, so a state's ``TimeoutSeconds`` cannot elapse here: the
  timeout scenario throws a stand-in for the error Step Functions raises on one (``States.Timeout``,
  see ``TIMEOUT``), which takes the same catch-all path; the value of ``TimeoutSeconds`` is checked
  in ``tests/stacks/test_fanout.py``.
* LocalStack's ECS ``.sync`` returns a stopped task whatever its exit code, where AWS fails the
  state with ``States.TaskFailed`` and the task as the cause; the exit-3 scenario throws that
  (renamed, see ``TASK_FAILED``).
* Retry intervals are cut to 1 s so the test does not wait minutes; the template test checks the
  real ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.local_aws import ACCOUNT, REGION, LocalAws
from stacks.fanout import LAUNCH_ERRORS
from tests.support import synth

MACHINE = "etl-pipeline-dev"
# What Step Functions raises for a task that stopped with a non-zero exit, and for a state that timed
# out. LocalStack refuses to throw States.* errors from a mock ("Custom Error Names MUST NOT begin
# with the prefix 'States.'"), so these stand in for them; the definition's one reference to
# States.TaskFailed is renamed to match (``definition``), nothing else changes.
TASK_FAILED, TIMEOUT = "Mock.TaskFailed", "Mock.Timeout"
CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


def stopped_task(exit_code: int) -> dict:
    """A stopped task as the .sync integration reports it (DescribeTasks, in PascalCase)."""
    return {
        "TaskArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/etl/{exit_code:032d}",
        "LastStatus": "STOPPED",
        "StopCode": "EssentialContainerExited",
        "StoppedReason": "Essential container in task exited",
        "Containers": [{"Name": "etl", "ExitCode": exit_code, "LastStatus": "STOPPED"}],
    }


def throw(error: str, cause: str) -> dict:
    return {"Throw": {"Error": error, "Cause": cause}}


MOCKED_RESPONSES = {
    "Succeeds": {"0": {"Return": stopped_task(0)}},
    "CapacityTwiceThenSucceeds": {"0-1": throw(LAUNCH_ERRORS[0], CAPACITY), "2": {"Return": stopped_task(0)}},
    "FailuresTwiceThenSucceeds": {"0-1": throw(LAUNCH_ERRORS[1], "RESOURCE:FARGATE"), "2": {"Return": stopped_task(0)}},
    "CapacityEveryTime": {"0-3": throw(LAUNCH_ERRORS[0], CAPACITY)},
    "ExitsThree": {"0": throw(TASK_FAILED, json.dumps(stopped_task(3)))},
    "TimesOut": {"0": throw(TIMEOUT, "")},
}
SCENARIOS = {name: {"RunShard": name} for name in MOCKED_RESPONSES}


def render(value: Any, names: dict[str, str]) -> str:
    """A CloudFormation value as text, with each reference replaced by what ``names`` gives it."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return names.get(value["Ref"], f"placeholder-{value['Ref']}")
    if "Fn::GetAtt" in value:
        return names.get(value["Fn::GetAtt"][0], f"placeholder-{value['Fn::GetAtt'][0]}")
    separator, parts = value["Fn::Join"]
    return separator.join(render(part, names) for part in parts)


def definition(topic_arn: str) -> dict:
    """The synthesized definition of the dev stage with shards = 8, its alert topic the local one."""
    template = synth(shards="8").to_json()
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    (topic_id,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::SNS::Topic"]
    text = render(machine["Properties"]["DefinitionString"], {"AWS::Partition": "aws", topic_id: topic_arn})
    assert text.count('"States.TaskFailed"') == 1
    asl = json.loads(text.replace('"States.TaskFailed"', f'"{TASK_FAILED}"'))
    for retry in asl["States"]["Shards"]["ItemProcessor"]["States"]["RunShard"]["Retry"]:
        retry["IntervalSeconds"] = 1  # see the module docstring
    return asl


class FanOut:
    """The state machine on LocalStack, and the queue that receives its alerts."""

    def __init__(self, aws: LocalAws) -> None:
        self.sfn, self.sqs = aws.client("stepfunctions"), aws.client("sqs")
        topic_arn = aws.client("sns").create_topic(Name="alerts")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        aws.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        self.arn = self.sfn.create_state_machine(
            name=MACHINE, definition=json.dumps(definition(topic_arn)), roleArn=f"arn:aws:iam::{ACCOUNT}:role/fan-out",
        )["stateMachineArn"]

    def run(self, scenario: str, shards: list[int], timeout: float = 60) -> dict:
        """Start an execution with the ECS integration mocked as ``scenario``; wait for it to end."""
        execution = self.sfn.start_execution(stateMachineArn=f"{self.arn}#{scenario}",
                                             input=json.dumps({"shards": shards}))["executionArn"]
        deadline = time.monotonic() + timeout
        while (described := self.sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{scenario} still running after {timeout} s"
            time.sleep(0.2)
        described["events"] = self.sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        return described

    def alerts(self, wait_seconds: int = 2) -> list[dict]:
        """The alert messages published since the last call (SNS envelopes' Subject and Message)."""
        received = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
        messages = received.get("Messages", [])
        for message in messages:
            self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture(scope="module")
def fan_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FanOut]:
    mock_file = Path(tmp_path_factory.mktemp("sfn")) / "mock.json"
    mock_file.write_text(json.dumps({
        "StateMachines": {MACHINE: {"TestCases": SCENARIOS}},
        "MockedResponses": MOCKED_RESPONSES,
    }))
    with LocalAws(env={"SFN_MOCK_CONFIG": str(mock_file)}) as aws:
        yield FanOut(aws)


def task_attempts(execution: dict) -> list[str]:
    """What each RunShard attempt ended in: the error name, or "succeeded"."""
    details = {"TaskFailed": "taskFailedEventDetails", "TaskSucceeded": "taskSucceededEventDetails"}
    return [
        e[details[e["type"]]].get("error", "succeeded")
        # A mocked failure carries no resourceType; only RunShard (ECS) is mocked.
        for e in execution["events"] if e["type"] in details and e[details[e["type"]]].get("resourceType", "ecs") == "ecs"
    ]


def failed_shards(alert: dict) -> list[dict]:
    """The failed shards the alert lists (the JSON after "exit code (...): ")."""
    message = alert["Message"]
    start = message.index("[{")
    end = message.index("}]", start) + 2
    return json.loads(message[start:end])


def test_all_shards_succeed_and_nobody_is_alerted(fan_out: FanOut) -> None:
    execution = fan_out.run("Succeeds", list(range(8)))

    assert execution["status"] == "SUCCEEDED", execution
    results = json.loads(execution["output"])["results"]
    assert [(r["index"], r["failed"]) for r in results] == [(i, False) for i in range(8)]
    assert all(r["task_arn"].startswith("arn:aws:ecs:") for r in results)
    assert task_attempts(execution) == ["succeeded"] * 8
    assert fan_out.alerts() == []


@pytest.mark.parametrize("scenario", ["CapacityTwiceThenSucceeds", "FailuresTwiceThenSucceeds"])
def test_a_launch_that_fails_twice_on_capacity_is_retried_and_the_shard_succeeds(fan_out: FanOut, scenario: str) -> None:
    execution = fan_out.run(scenario, [3])

    assert execution["status"] == "SUCCEEDED", execution
    error = MOCKED_RESPONSES[scenario]["0-1"]["Throw"]["Error"]
    assert task_attempts(execution) == [error, error, "succeeded"]
    assert fan_out.alerts() == []


def test_a_launch_that_keeps_failing_gives_up_after_three_retries_and_alerts(fan_out: FanOut) -> None:
    execution = fan_out.run("CapacityEveryTime", [4])

    assert execution["status"] == "FAILED" and execution["error"] == "ShardsFailed"
    assert task_attempts(execution) == [LAUNCH_ERRORS[0]] * 4
    (alert,) = fan_out.alerts()
    assert failed_shards(alert) == [
        {"index": 4, "failed": True, "error": LAUNCH_ERRORS[0], "exit_code": "none", "reason": CAPACITY}
    ]


def test_shards_that_exit_3_are_not_retried_and_one_alert_names_each_with_its_exit_code(fan_out: FanOut) -> None:
    execution = fan_out.run("ExitsThree", [2, 5])

    assert execution["status"] == "FAILED" and execution["error"] == "ShardsFailed"
    assert task_attempts(execution) == [TASK_FAILED] * 2  # a task that ran is never retried
    (alert,) = fan_out.alerts()
    assert alert["Subject"] == "etl-pipeline dev: shards failed"
    assert alert["Message"].startswith("The etl-pipeline job (dev): 2 of 8 shards failed in execution arn:aws:states:")
    assert failed_shards(alert) == [
        {"index": i, "failed": True, "error": TASK_FAILED, "exit_code": 3,
         "reason": "Essential container in task exited"}
        for i in (2, 5)
    ]
    assert "3 some rows not loaded" in alert["Message"]
    assert "make run-now STAGE=dev SHARD=<index>" in alert["Message"]


def test_a_shard_that_times_out_is_named_without_an_exit_code(fan_out: FanOut) -> None:
    execution = fan_out.run("TimesOut", [6])

    assert execution["status"] == "FAILED"
    assert task_attempts(execution) == [TIMEOUT]
    (alert,) = fan_out.alerts()
    assert alert["Message"].startswith("The etl-pipeline job (dev): 1 of 8 shards failed")
    assert failed_shards(alert) == [{"index": 6, "failed": True, "error": TIMEOUT, "exit_code": "none", "reason": ""}]
