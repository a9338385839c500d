"""Who hears about a failed or missed run: an encrypted SNS topic fed by task-stop events and alarms."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from etl_job import metrics
from stacks import limits


class Alerts(Construct):
    """Notifies on failed runs (non-zero exit, failed start), failed launches and missed runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        email: str | None,
        cluster_arn: str,
        task_family: str,
        log_group: logs.ILogGroup,
        schedule_rule: events.Rule,
        dead_letter_queue: sqs.IQueue,
        missed_run_window_minutes: int | None,
        schedule_enabled: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        # EventBridge and CloudWatch can publish to an encrypted topic only with a customer-managed
        # key whose policy lets them use it; the AWS-managed alias/aws/sns key cannot.
        key = kms.Key(
            self,
            "TopicKey",
            description=f"Encrypts the {limits.PROJECT} {stage} alert topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        for service in ("events.amazonaws.com", "cloudwatch.amazonaws.com"):
            key.grant(iam.ServicePrincipal(service), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Topic", display_name=f"{limits.PROJECT} {stage} alerts", master_key=key, enforce_ssl=True)
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self._task_failures(stage, cluster_arn, task_family, log_group)
        action = cloudwatch_actions.SnsAction(self.topic)
        failed_launches = cloudwatch.Alarm(
            self,
            "FailedLaunchesAlarm",
            alarm_description=f"{limits.PROJECT} {stage}: the schedule could not start the task (see the dead-letter queue)",
            metric=cloudwatch.Metric(
                namespace="AWS/Events",
                metric_name="FailedInvocations",
                dimensions_map={"RuleName": schedule_rule.rule_name},
                statistic="Sum",
                period=Duration.minutes(5),
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        dead_letters = cloudwatch.Alarm(
            self,
            "DeadLetterAlarm",
            alarm_description=f"{limits.PROJECT} {stage}: a scheduled launch gave up and landed in the dead-letter queue",
            metric=dead_letter_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarms = [failed_launches, dead_letters]

        # The job logs one success line per clean run; a metric filter turns it into a metric
        # (no permission, no agent), and silence for longer than the schedule allows is a missed run.
        logs.MetricFilter(
            self,
            "SuccessfulRunFilter",
            log_group=log_group,
            filter_pattern=logs.FilterPattern.number_value(f"$.{metrics.SUCCESSFUL_RUN}", "=", 1),
            metric_namespace=metrics.NAMESPACE,
            metric_name=metrics.SUCCESSFUL_RUN,
            metric_value="1",
            dimensions={metrics.DIMENSION_STAGE: f"$.{metrics.DIMENSION_STAGE}"},
            unit=cloudwatch.Unit.COUNT,
        )
        if missed_run_window_minutes is not None:
            alarms.append(
                cloudwatch.Alarm(
                    self,
                    "MissedRunAlarm",
                    alarm_description=(
                        f"{limits.PROJECT} {stage}: no successful run in the last {missed_run_window_minutes // 60} h "
                        "(the longest gap between scheduled runs plus the timeout)"
                    ),
                    metric=cloudwatch.Metric(
                        namespace=metrics.NAMESPACE,
                        metric_name=metrics.SUCCESSFUL_RUN,
                        dimensions_map={metrics.DIMENSION_STAGE: stage},
                        statistic="Sum",
                        period=Duration.minutes(missed_run_window_minutes),
                    ),
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
                    # A paused schedule is not a missed run.
                    actions_enabled=schedule_enabled,
                )
            )
        for alarm in alarms:
            alarm.add_alarm_action(action)

    def _task_failures(self, stage: str, cluster_arn: str, task_family: str, log_group: logs.ILogGroup) -> None:
        family_arn_prefix = Stack.of(self).format_arn(service="ecs", resource="task-definition", resource_name=f"{task_family}:")
        rule = events.Rule(
            self,
            "TaskFailedRule",
            description=f"{task_family}: a task stopped with a non-zero exit code or failed to start",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [cluster_arn],
                    "taskDefinitionArn": [{"prefix": family_arn_prefix}],
                    "lastStatus": ["STOPPED"],
                    "$or": [
                        {"containers": {"exitCode": [{"anything-but": 0}]}},
                        {"stopCode": ["TaskFailedToStart", "SpotInterruption"]},
                    ],
                },
            ),
        )
        field = events.EventField.from_path
        rule.add_target(
            targets.SnsTopic(
                self.topic,
                message=events.RuleTargetInput.from_multiline_text(
                    f"The {limits.PROJECT} job ({stage}) ended without success.\n"
                    f"Exit code: {field('$.detail.containers[0].exitCode')} "
                    "(1 fatal error, 3 some rows not loaded: see the errors table, 4 timed out, 5 skipped: previous run still going, "
                    "143 stopped by SIGTERM or Spot; none: it never started)\n"
                    f"Stop code: {field('$.detail.stopCode')}\n"
                    f"Stopped reason: {field('$.detail.stoppedReason')}\n"
                    f"Task: {field('$.detail.taskArn')}\n"
                    f"Logs: log group {log_group.log_group_name}, stream {limits.PROJECT}/{limits.CONTAINER_NAME}/<task id, the end of the task ARN>\n"
                    f"Read them: aws logs tail {log_group.log_group_name} --since 1d"
                ),
            )
        )
