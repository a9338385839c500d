"""Failed, stopped and missed runs reach a person: topic, task-stop rule, alarms, success metric."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Template

from etl_job import contract, metrics
from stacks.schedule_expression import missed_run_window_minutes
from tests.stacks.conftest import synth
from tests.stacks.test_pipeline_stack import container, logical_id, only


def alarms(template: Template) -> dict[str, dict]:
    return {k: v["Properties"] for k, v in template.find_resources("AWS::CloudWatch::Alarm").items()}


def alarm_on(template: Template, metric_name: str) -> dict:
    (found,) = [a for a in alarms(template).values() if a["MetricName"] == metric_name]
    return found


def topic_id(template: Template) -> str:
    return logical_id(template, "AWS::SNS::Topic")


def test_topic_is_encrypted_with_a_rotated_key_the_publishers_may_use(dev: Template) -> None:
    key_id, key = only(dev, "AWS::KMS::Key")
    _, topic = only(dev, "AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    services = set()
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        service = statement.get("Principal", {}).get("Service", [])
        services.update([service] if isinstance(service, str) else service)
    assert services == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}
    (policy,) = dev.find_resources("AWS::SNS::TopicPolicy").values()
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_email_subscription_only_when_configured(dev: Template) -> None:
    dev.resource_count_is("AWS::SNS::Subscription", 0)
    template = synth(alarm_email="data-oncall@example.com")
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "data-oncall@example.com", "TopicArn": {"Ref": topic_id(template)}},
    )


def failure_rule(template: Template) -> dict:
    (rule,) = [
        r["Properties"]
        for r in template.find_resources("AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
    ]
    return rule


def test_task_stops_with_non_zero_exit_or_failed_start_notify_the_topic(dev: Template) -> None:
    rule = failure_rule(dev)
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"]
    detail = pattern["detail"]
    assert detail["clusterArn"] == [{"Fn::GetAtt": [logical_id(dev, "AWS::ECS::Cluster"), "Arn"]}]
    assert json.dumps(detail["taskDefinitionArn"]).endswith(':task-definition/etl-pipeline-dev:"]]}}]')
    assert detail["lastStatus"] == ["STOPPED"]
    assert {"containers": {"exitCode": [{"anything-but": 0}]}} in detail["$or"]
    assert {"stopCode": ["TaskFailedToStart", "SpotInterruption"]} in detail["$or"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": topic_id(dev)}
    transformer = target["InputTransformer"]
    assert set(transformer["InputPathsMap"].values()) == {
        "$.detail.containers[0].exitCode", "$.detail.stopCode", "$.detail.stoppedReason", "$.detail.taskArn",
    }
    message = json.dumps(transformer["InputTemplate"])
    for must in ("(dev)", "Exit code", "4 timed out", "Stopped reason", "aws logs tail", logical_id(dev, "AWS::Logs::LogGroup")):
        assert must in message


def test_failed_launches_and_dead_letters_alarm(dev: Template) -> None:
    failed = alarm_on(dev, "FailedInvocations")
    assert failed["Namespace"] == "AWS/Events"
    schedule_rule = [k for k in dev.find_resources("AWS::Events::Rule") if k.startswith("Schedule")][0]
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": schedule_rule}}]
    dead = alarm_on(dev, "ApproximateNumberOfMessagesVisible")
    assert dead["Dimensions"][0]["Value"] == {"Fn::GetAtt": [logical_id(dev, "AWS::SQS::Queue"), "QueueName"]}
    for alarm in (failed, dead):
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["AlarmActions"] == [{"Ref": topic_id(dev)}]


def test_success_lines_become_the_metric_the_missed_run_alarm_watches(dev: Template) -> None:
    _, metric_filter = only(dev, "AWS::Logs::MetricFilter")
    props = metric_filter["Properties"]
    assert props["LogGroupName"] == {"Ref": logical_id(dev, "AWS::Logs::LogGroup")}
    assert props["FilterPattern"] == "{ $.SuccessfulRun = 1 }"
    (transformation,) = props["MetricTransformations"]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == (metrics.NAMESPACE, metrics.SUCCESSFUL_RUN)
    assert transformation["Dimensions"] == [{"Key": "Stage", "Value": "$.Stage"}]
    # The job's own success line matches the filter's field and value.
    line = json.loads(metrics.success_emf_line(stage="dev", rows_loaded=1, rows_failed=0, duration_seconds=1))
    assert line[metrics.SUCCESSFUL_RUN] == 1 and line[metrics.DIMENSION_STAGE] == "dev"

    missed = alarm_on(dev, metrics.SUCCESSFUL_RUN)
    assert missed["Namespace"] == metrics.NAMESPACE
    assert missed["Dimensions"] == [{"Name": "Stage", "Value": "dev"}]
    assert missed["TreatMissingData"] == "breaching"
    assert missed["ComparisonOperator"] == "LessThanThreshold" and missed["Threshold"] == 1
    assert missed["Period"] == 28 * 3600  # daily schedule + 240 min timeout
    assert missed["ActionsEnabled"] is True
    assert missed["AlarmActions"] == [{"Ref": topic_id(dev)}]


@pytest.mark.parametrize(
    ("schedule", "timeout", "window_hours"),
    [
        ("cron(0 5 * * ? *)", 240, 28),
        ("rate(1 hour)", 30, 2),
        ("cron(0 5 ? * MON-FRI *)", 60, 73),  # Friday 05:00 to Monday 05:00, plus the timeout
        ("cron(0 5 ? * MON,THU *)", 60, 97),  # Thursday to Monday
        ("cron(0 5 ? * SUN *)", 60, None),  # weekly + timeout: past the 7 days CloudWatch can look back
        ("cron(0 5 1 * ? *)", 60, None),  # monthly: longer than CloudWatch's 7-day window
    ],
)
def test_missed_run_window_follows_the_schedule(schedule: str, timeout: int, window_hours: int | None) -> None:
    window = missed_run_window_minutes(schedule, timeout)
    assert window == (None if window_hours is None else window_hours * 60)


def test_no_missed_run_alarm_when_the_schedule_is_too_sparse() -> None:
    template = synth(schedule="cron(0 5 1 * ? *)")
    assert metrics.SUCCESSFUL_RUN not in [a["MetricName"] for a in alarms(template).values()]


def test_paused_schedule_silences_the_missed_run_alarm() -> None:
    template = synth(schedule_enabled="false")
    assert alarm_on(template, metrics.SUCCESSFUL_RUN)["ActionsEnabled"] is False


def test_timeout_is_passed_to_the_job() -> None:
    environment = {e["Name"]: e["Value"] for e in container(synth(timeout_minutes="90"))["Environment"]}
    assert environment[contract.TIMEOUT_MINUTES] == "90"
