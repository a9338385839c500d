"""Failed, stopped and missed runs reach a person: topic, task-stop rule, alarms, success metric."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Template

from etl_job import metrics
from stacks.schedule_expression import missed_run_window_minutes
from tests.support import logical_id, only, synth


def alarms(template: Template) -> dict[str, dict]:
    return {k: v["Properties"] for k, v in template.find_resources("AWS::CloudWatch::Alarm").items()}


def alarm_on(template: Template, metric_name: str) -> dict:
    (found,) = [a for a in alarms(template).values() if a.get("MetricName") == metric_name]
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
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # The policy replaces SNS's default one: CloudWatch, not only EventBridge, must be let in.
    publishers = {s["Principal"]["Service"] for s in statements if s["Effect"] == "Allow"}
    assert publishers == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}
    (alarms_statement,) = [s for s in statements if s.get("Sid") == "AlarmsOfThisStackPublish"]
    assert alarms_statement["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Fn::GetAtt": [alarm_id, "Arn"]} for alarm_id in dev.find_resources("AWS::CloudWatch::Alarm")
    ]
    assert alarms_statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_email_subscription_only_when_configured(dev: Template) -> None:
    dev.resource_count_is("AWS::SNS::Subscription", 0)
    template = synth(alarm_email="data-oncall@example.com")
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "data-oncall@example.com", "TopicArn": {"Ref": topic_id(template)}},
    )


def rule_for(template: Template, detail_type: str) -> dict:
    (rule,) = [
        r["Properties"]
        for r in template.find_resources("AWS::Events::Rule").values()
        if detail_type in r["Properties"].get("EventPattern", {}).get("detail-type", [])
    ]
    return rule


def failure_rule(template: Template) -> dict:
    return rule_for(template, "ECS Task State Change")


def test_task_stops_with_non_zero_exit_or_failed_start_notify_the_topic(dev: Template) -> None:
    rule = failure_rule(dev)
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"]
    detail = pattern["detail"]
    assert detail["clusterArn"] == [{"Fn::GetAtt": [logical_id(dev, "AWS::ECS::Cluster"), "Arn"]}]
    assert json.dumps(detail["taskDefinitionArn"]).endswith(':task-definition/etl-pipeline-dev:"]]}}]')
    assert detail["lastStatus"] == ["STOPPED"]
    # Exit 5 (skipped: the previous run is still going) is not a failure; repeated skips alarm instead.
    assert {"containers": {"exitCode": [{"anything-but": [0, 5]}]}} in detail["$or"]
    assert {"stopCode": ["TaskFailedToStart", "SpotInterruption"]} in detail["$or"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": topic_id(dev)}
    transformer = target["InputTransformer"]
    assert set(transformer["InputPathsMap"].values()) == {
        "$.detail.containers[0].exitCode", "$.detail.stopCode", "$.detail.stoppedReason", "$.detail.taskArn",
    }
    message = json.dumps(transformer["InputTemplate"])
    for must in ("etl-pipeline dev:", "Exit code", "4 timed out", "Stopped reason", "aws logs tail", logical_id(dev, "AWS::Logs::LogGroup")):
        assert must in message
    assert "5 skipped" not in message


@pytest.mark.parametrize("config", [{}, {"stage": "prod"}, {"capacity": "spot"}])
def test_every_placeholder_of_an_input_template_is_an_input_path(config: dict) -> None:
    """EventBridge rejects a target whose template has a <...> that InputPathsMap does not define."""
    import re

    for rule in synth(**config).find_resources("AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            transformer = target.get("InputTransformer")
            if transformer:
                text = json.dumps(transformer["InputTemplate"])
                placeholders = set(re.findall(r"<([^<>]*)>", text))
                assert placeholders <= set(transformer["InputPathsMap"]) | {"aws.events.rule-arn", "aws.events.rule-name", "aws.events.event.ingestion-time", "aws.events.event", "aws.events.event.json"}, placeholders


def test_a_launch_ecs_refuses_notifies_the_topic(dev: Template) -> None:
    rule = rule_for(dev, "AWS API Call via CloudTrail")
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"]
    detail = pattern["detail"]
    assert (detail["eventSource"], detail["eventName"]) == (["ecs.amazonaws.com"], ["RunTask"])
    assert json.dumps(detail["requestParameters"]["taskDefinition"]).endswith(':task-definition/etl-pipeline-dev:"]]}}]')
    assert detail["responseElements"] == {"failures": {"reason": [{"exists": True}]}}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": topic_id(dev)}
    assert set(target["InputTransformer"]["InputPathsMap"].values()) == {
        "$.detail.responseElements.failures[0].reason", "$.detail.userIdentity.arn", "$.detail.eventTime",
    }
    assert "make run-now STAGE=dev" in json.dumps(target["InputTransformer"]["InputTemplate"])


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
    (props,) = [f["Properties"] for f in dev.find_resources("AWS::Logs::MetricFilter").values()
                if f["Properties"]["MetricTransformations"][0]["MetricName"] == metrics.SUCCESSFUL_RUN]
    assert props["LogGroupName"] == {"Ref": logical_id(dev, "AWS::Logs::LogGroup")}
    assert props["FilterPattern"] == "{ $.SuccessfulRun >= 1 }"
    (transformation,) = props["MetricTransformations"]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == (metrics.NAMESPACE, metrics.SUCCESSFUL_RUN)
    assert transformation["Dimensions"] == [{"Key": "Stage", "Value": "$.Stage"}]
    # The job's own success line matches the filter's field and value.
    line = json.loads(metrics.success_emf_line(stage="dev", rows_loaded=1, rows_failed=0, duration_seconds=1))
    assert line[metrics.SUCCESSFUL_RUN] == 1 and line[metrics.DIMENSION_STAGE] == "dev"

    missed = missed_run_alarm(dev)
    queries = {q["Id"]: q for q in missed["Metrics"]}
    succeeded = queries["succeeded"]["MetricStat"]
    assert succeeded["Metric"]["Namespace"] == metrics.NAMESPACE and succeeded["Metric"]["MetricName"] == metrics.SUCCESSFUL_RUN
    assert succeeded["Metric"]["Dimensions"] == [{"Name": "Stage", "Value": "dev"}]
    assert succeeded["Period"] == 28 * 3600  # daily schedule + 240 min timeout
    assert missed["AlarmActions"] == [{"Ref": topic_id(dev)}]


def missed_run_alarm(template: Template) -> dict:
    (alarm,) = [a for a in alarms(template).values() if "Metrics" in a and any(q["Id"] == "succeeded" for q in a["Metrics"])]
    return alarm


def test_a_fresh_deploy_or_a_lifted_pause_does_not_page(dev: Template) -> None:
    """Silence is not a missed run: only 'fired at least twice in the window and nothing succeeded' is."""
    missed = missed_run_alarm(dev)
    # No data at all (nothing fired, nothing ran: a fresh deploy, a pause) is not breaching.
    assert missed["TreatMissingData"] == "notBreaching"
    queries = {q["Id"]: q for q in missed["Metrics"]}
    assert queries["expr_1"]["Expression"] == "IF(FILL(fired, 0) >= 2 AND FILL(succeeded, 0) < 1, 1, 0)"
    fired = queries["fired"]["MetricStat"]
    schedule_rule = [k for k in dev.find_resources("AWS::Events::Rule") if k.startswith("Schedule")][0]
    assert fired["Metric"]["Namespace"] == "AWS/Events" and fired["Metric"]["MetricName"] == "Invocations"
    assert fired["Metric"]["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": schedule_rule}}]
    assert fired["Period"] == queries["succeeded"]["MetricStat"]["Period"] == 28 * 3600
    assert missed["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and missed["Threshold"] == 1


def test_skipping_twice_and_overlapping_runs_alarm(dev: Template) -> None:
    filters = {f["Properties"]["MetricTransformations"][0]["MetricName"]: f["Properties"] for f in dev.find_resources("AWS::Logs::MetricFilter").values()}
    # A skip line counts 1; every overlap check reports how many runs were loading.
    assert filters[metrics.SKIPPED_RUN]["FilterPattern"] == "{ $.SkippedRun >= 1 }"
    assert filters[metrics.SKIPPED_RUN]["MetricTransformations"][0]["MetricValue"] == "1"
    assert filters[metrics.CONCURRENT_RUNS]["FilterPattern"] == "{ $.ConcurrentRuns >= 1 }"
    assert filters[metrics.CONCURRENT_RUNS]["MetricTransformations"][0]["MetricValue"] == "$.ConcurrentRuns"
    skips = alarm_on(dev, metrics.SKIPPED_RUN)
    assert (skips["Statistic"], skips["Threshold"], skips["Period"]) == ("Sum", 2, 28 * 3600)
    concurrent = alarm_on(dev, metrics.CONCURRENT_RUNS)
    assert (concurrent["Statistic"], concurrent["Threshold"]) == ("Maximum", 2)
    for alarm in (skips, concurrent):
        assert alarm["TreatMissingData"] == "notBreaching" and alarm["AlarmActions"] == [{"Ref": topic_id(dev)}]


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
    assert not [a for a in alarms(template).values() if "Metrics" in a]

