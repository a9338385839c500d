"""The stack's alerts on a local AWS (LocalStack): its own rules, targets and alarms, real-shaped events.

Each EventBridge rule of the synthesized template is created with its event pattern and input
transformer as they are (``put_targets`` validates templates as AWS does), with the alert topic
standing in for the stack's and an SQS queue subscribed to it (raw delivery: the body is the
message a person reads). Then ECS task-state and CloudTrail RunTask events of every kind are put on
the bus, and each alarm of the template is set to ALARM.

Limits of the stand-in, named where they matter: LocalStack accepts ``put_events`` with the source
``aws.ecs`` (AWS reserves it for ECS itself and CloudTrail), so the events stand in for ECS's and
CloudTrail's; it does not enforce the topic, queue or key policies (the permission matrix,
tests/stacks/test_integration_permissions.py, checks those); it has no ECS; and it needs two
adjustments on Python 3.11 (dev/local_aws.py).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from dev.local_aws import ACCOUNT, REGION
from tests.support import synth

CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/EtlPipeline-dev-Cluster"
LOG_GROUP = "EtlPipeline-dev-JobLogs"
FAMILY = "etl-pipeline-dev"
SCHEDULE_RULE = "EtlPipeline-dev-ScheduleRule"
MEANINGS = (
    "(1 fatal error, 3 some rows not loaded: see the errors table, 4 timed out, 143 stopped by SIGTERM or Spot; "
    "none: it never started)"
)


def resolve(value: Any, names: dict[str, str]) -> Any:
    """The template value with Ref, Fn::GetAtt and Fn::Join replaced by this local account's names."""
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Ref"]:
        return names[value["Ref"]]
    if list(value) == ["Fn::GetAtt"]:
        return names[".".join(value["Fn::GetAtt"])]
    if list(value) == ["Fn::Join"]:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve(part, names) for part in parts)
    return {key: resolve(item, names) for key, item in value.items()}


class Alerts:
    """The template's alert rules and alarms on LocalStack, and the queue that reads the topic."""

    def __init__(self, aws, template: dict) -> None:
        self.aws, self.template = aws, template
        sqs, sns = aws.client("sqs"), aws.client("sns")
        self.queue = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        resources = template["Resources"]
        self.names = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}
        for logical_id, resource in resources.items():
            kind = resource["Type"]
            if kind == "AWS::ECS::Cluster":
                self.names[f"{logical_id}.Arn"] = CLUSTER_ARN
            elif kind == "AWS::Logs::LogGroup":
                self.names[logical_id] = LOG_GROUP
            elif kind == "AWS::SNS::Topic":
                self.names[logical_id] = self.topic
            elif kind == "AWS::SQS::Queue":
                self.names[f"{logical_id}.QueueName"] = "EtlPipeline-dev-LaunchDeadLetterQueue"
            elif kind == "AWS::Events::Rule" and "ScheduleExpression" in resource["Properties"]:
                self.names[logical_id] = SCHEDULE_RULE
            elif kind == "AWS::CloudWatch::Alarm":
                self.names[f"{logical_id}.Arn"] = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:EtlPipeline-dev-{logical_id}"

    def alert_rules(self) -> dict[str, dict]:
        return {k: v["Properties"] for k, v in self.template["Resources"].items()
                if v["Type"] == "AWS::Events::Rule" and "EventPattern" in v["Properties"]}

    def create_rules(self) -> None:
        """put_rule and put_targets exactly as the template has them; raises what EventBridge refuses."""
        events = self.aws.client("events")
        for logical_id, props in self.alert_rules().items():
            events.put_rule(Name=logical_id, EventPattern=json.dumps(resolve(props["EventPattern"], self.names)))
            targets = [{**resolve(t, self.names)} for t in props["Targets"]]
            response = events.put_targets(Rule=logical_id, Targets=targets)
            assert response["FailedEntryCount"] == 0, response["FailedEntries"]

    def put(self, detail_type: str, detail: dict) -> None:
        entry = {"Source": "aws.ecs", "DetailType": detail_type, "Detail": json.dumps(detail), "Resources": []}
        response = self.aws.client("events").put_events(Entries=[entry])
        assert response["FailedEntryCount"] == 0, response

    def messages(self, expected: int, *, settle_seconds: float = 3.0, timeout_seconds: float = 60.0) -> list[str]:
        """Every message the topic delivered: wait for ``expected``, then a little longer for strays."""
        sqs = self.aws.client("sqs")
        found: list[str] = []
        deadline = time.monotonic() + timeout_seconds
        quiet_until = None
        while time.monotonic() < deadline:
            batch = sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            for message in batch:
                found.append(message["Body"])
                sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
            if len(found) >= expected and quiet_until is None:
                quiet_until = time.monotonic() + settle_seconds
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
        return found


def task_arn(task_id: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/EtlPipeline-dev-Cluster/{task_id}"


def task_stopped(task_id: str, *, exit_code: int | None, stop_code: str = "EssentialContainerExited",
                 reason: str = "Essential container in task exited", family: str = FAMILY, cluster: str = CLUSTER_ARN) -> dict:
    """The detail of a real-shaped ECS Task State Change event for a stopped Fargate task."""
    container = {
        "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/EtlPipeline-dev-Cluster/{task_id}/{uuid.uuid4()}",
        "lastStatus": "STOPPED", "name": "etl", "taskArn": task_arn(task_id), "cpu": "0",
        **({"exitCode": exit_code} if exit_code is not None else {}),
    }
    return {
        "attachments": [], "availabilityZone": f"{REGION}a", "clusterArn": cluster, "containers": [container],
        "cpu": "256", "createdAt": "2026-11-27T05:00:02.116Z", "desiredStatus": "STOPPED", "group": f"family:{family}",
        "lastStatus": "STOPPED", "launchType": "FARGATE", "memory": "512", "platformVersion": "1.4.0",
        "stopCode": stop_code, "stoppedAt": "2026-11-27T05:41:09.532Z", "stoppedReason": reason,
        "stoppingAt": "2026-11-27T05:41:07.291Z", "taskArn": task_arn(task_id),
        "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:3", "version": 5,
    }


def run_task_call(*, failures: list[dict], family: str = FAMILY) -> dict:
    """The detail of a real-shaped CloudTrail event of the schedule's RunTask call."""
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole", "invokedBy": "events.amazonaws.com",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/EtlPipeline-dev-EventsRole/1a2b3c",
        },
        "eventTime": "2026-11-27T05:00:01Z", "eventSource": "ecs.amazonaws.com", "eventName": "RunTask",
        "awsRegion": REGION, "sourceIPAddress": "events.amazonaws.com", "userAgent": "events.amazonaws.com",
        "requestParameters": {
            "cluster": CLUSTER_ARN, "count": 1, "taskDefinition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:3",
            "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
        },
        "responseElements": {"tasks": [] if failures else [{"taskArn": task_arn("started")}], "failures": failures},
        "readOnly": False, "eventType": "AwsApiCall", "managementEvent": True, "eventCategory": "Management",
    }


CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"

# (case, the event, whether a person is told)
CASES = [
    ("exit 0", lambda: task_stopped("exit0", exit_code=0), False),
    ("exit 1", lambda: task_stopped("exit1", exit_code=1), True),
    ("exit 3", lambda: task_stopped("exit3", exit_code=3), True),
    ("exit 4", lambda: task_stopped("exit4", exit_code=4), True),
    ("exit 5 (skipped)", lambda: task_stopped("exit5", exit_code=5), False),
    ("exit 143", lambda: task_stopped("exit143", exit_code=143, stop_code="UserInitiated", reason="Task stopped by user"), True),
    ("Spot interruption", lambda: task_stopped("spot", exit_code=143, stop_code="SpotInterruption",
                                               reason="Your Spot Task was interrupted."), True),
    ("failed to start", lambda: task_stopped("nostart", exit_code=None, stop_code="TaskFailedToStart",
                                             reason="CannotPullContainerError: pull image manifest has been retried 5 time(s)"), True),
    ("another family", lambda: task_stopped("otherfamily", exit_code=1, family="some-other-job"), False),
    ("another cluster", lambda: task_stopped("othercluster", exit_code=1,
                                             cluster=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/other"), False),
]


@pytest.fixture(scope="module")
def alerts(local_aws) -> Alerts:
    found = Alerts(local_aws, synth().to_json())
    found.create_rules()
    return found


def test_every_alert_rule_is_accepted_with_its_targets(local_aws) -> None:
    """The first deploy's failure: EventBridge refused the task-failed rule's input template."""
    Alerts(local_aws, synth(stage="prod").to_json()).create_rules()
    Alerts(local_aws, synth(capacity="spot").to_json()).create_rules()


def test_which_task_stops_reach_a_person_and_what_they_read(alerts: Alerts) -> None:
    for _, event, _ in CASES:
        alerts.put("ECS Task State Change", event())
    told = [name for name, _, tell in CASES if tell]
    received = [json.loads(body) for body in alerts.messages(len(told))]

    by_task = {}
    for text in received:
        arn = text.split(" | Task: ", 1)[1].split(" | ", 1)[0]
        by_task[arn.rsplit("/", 1)[1]] = text
    assert sorted(by_task) == sorted(["exit1", "exit3", "exit4", "exit143", "spot", "nostart"])
    assert len(received) == len(told)

    # LocalStack delivers a string template as a JSON string, as AWS does (its snapshots record it);
    # what a person reads is the text inside.
    assert by_task["exit1"] == (
        "etl-pipeline dev: the job ended without success"
        f" | Exit code: 1 {MEANINGS}"
        " | Stop code: EssentialContainerExited | Stopped reason: Essential container in task exited"
        f" | Task: {task_arn('exit1')}"
        f" | Logs: log group {LOG_GROUP}, log stream etl-pipeline/etl/ followed by the task id (the last part of the task ARN)"
        f" | Read them: aws logs tail {LOG_GROUP} --since 1d"
    )
    assert by_task["spot"].startswith(
        f"etl-pipeline dev: the job ended without success | Exit code: 143 {MEANINGS}"
        " | Stop code: SpotInterruption | Stopped reason: Your Spot Task was interrupted. | "
    )
    # No exit code: the path is missing and EventBridge leaves the placeholder empty.
    assert f"Exit code:  {MEANINGS} | Stop code: TaskFailedToStart | Stopped reason: CannotPullContainerError" in by_task["nostart"]


def test_a_launch_ecs_refuses_reaches_a_person(alerts: Alerts) -> None:
    alerts.put("AWS API Call via CloudTrail", run_task_call(failures=[]))  # a task started
    alerts.put("AWS API Call via CloudTrail", run_task_call(failures=[{"reason": CAPACITY}], family="some-other-job"))
    alerts.put("AWS API Call via CloudTrail", run_task_call(failures=[{"arn": CLUSTER_ARN, "reason": CAPACITY}]))

    (body,) = alerts.messages(1)
    assert json.loads(body) == (
        "etl-pipeline dev: the job was not started: ECS accepted the launch but started no task"
        f" | Reason: {CAPACITY}"
        f" | Launched by arn:aws:sts::{ACCOUNT}:assumed-role/EtlPipeline-dev-EventsRole/1a2b3c at 2026-11-27T05:00:01Z"
        " | Nothing ran and nothing was touched; the next scheduled run tries again"
        " | To run it now: make run-now STAGE=dev"
    )


def test_every_alarm_of_the_template_notifies_the_topic(alerts: Alerts) -> None:
    """Each alarm created as the template has it, with the topic as its action, then set to ALARM."""
    cloudwatch = alerts.aws.client("cloudwatch")
    alarms = {k: v["Properties"] for k, v in alerts.template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms) == 5
    for logical_id, props in alarms.items():
        props = resolve({k: v for k, v in props.items() if k != "Tags"}, alerts.names)
        assert props["AlarmActions"] == [alerts.topic]
        cloudwatch.put_metric_alarm(AlarmName=f"EtlPipeline-dev-{logical_id}", **props)
    for logical_id in alarms:
        cloudwatch.set_alarm_state(AlarmName=f"EtlPipeline-dev-{logical_id}", StateValue="ALARM", StateReason="integration test")

    notifications = [json.loads(body) for body in alerts.messages(len(alarms))]
    assert sorted(n["AlarmName"] for n in notifications) == sorted(f"EtlPipeline-dev-{k}" for k in alarms)
    for notification in notifications:
        logical_id = notification["AlarmName"].removeprefix("EtlPipeline-dev-")
        assert notification["NewStateValue"] == "ALARM"
        assert notification["AlarmDescription"] == alarms[logical_id]["AlarmDescription"]
