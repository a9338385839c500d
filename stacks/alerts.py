"""Who hears about a failed or missed run: an encrypted SNS topic fed by task-stop events and alarms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from etl_job import metrics
from etl_job.errors import ExitCode
from stacks import limits
from stacks.config import StageConfig
from stacks.schedule_expression import ALARM_WINDOW_MAX_MINUTES, missed_run_window_minutes

if TYPE_CHECKING:
    from stacks.job import EtlJob
    from stacks.schedule import Schedule

# Who publishes to the alert topic: EventBridge rules (task stops, refused launches) and CloudWatch alarms.
TOPIC_PUBLISHERS = ("events.amazonaws.com", "cloudwatch.amazonaws.com")
# A missed run: the schedule fired this often within the window and nothing succeeded.
MISSED_RUN_MIN_FIRINGS = 2
# Skipped runs (exit 5) within the window that page someone.
REPEATED_SKIPS = 2


class Alerts(Construct):
    """Notifies on failed runs (non-zero exit, failed start), refused and failed launches, missed runs,
    repeated skips and overlapping runs."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, cluster: ecs.ICluster, job: EtlJob,
                 schedule: Schedule) -> None:
        super().__init__(scope, construct_id)
        self._stage = config.stage
        self._log_group = job.log_group
        self.topic = self._encrypted_topic(config.stage)
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []

        task_family = job.task_definition.family
        family_arn_prefix = Stack.of(self).format_arn(service="ecs", resource="task-definition", resource_name=f"{task_family}:")
        self._task_failures(cluster.cluster_arn, task_family, family_arn_prefix)
        self._refused_launches(task_family, family_arn_prefix)
        self._launch_alarms(schedule)
        self._run_alarms(config, schedule.rule)
        self._alarms_publish_to_topic()

    def _encrypted_topic(self, stage: str) -> sns.Topic:
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
        for service in TOPIC_PUBLISHERS:
            key.grant(iam.ServicePrincipal(service), "kms:Decrypt", "kms:GenerateDataKey*")
        return sns.Topic(self, "Topic", display_name=f"{limits.PROJECT} {stage} alerts", master_key=key, enforce_ssl=True)

    def _run_alarms(self, config: StageConfig, schedule_rule: events.Rule) -> None:
        """Missed runs (when the schedule allows telling them: see missed_run_window_minutes), skips and overlaps."""
        missed_run_window = missed_run_window_minutes(config.schedule, config.timeout_minutes)
        if missed_run_window is not None:
            self._missed_run_alarm(schedule_rule, missed_run_window)
        else:
            self._metric_filter(metrics.SUCCESSFUL_RUN)
        self._overlap_alarms(missed_run_window or ALARM_WINDOW_MAX_MINUTES)

    def _alarms_publish_to_topic(self) -> None:
        action = cloudwatch_actions.SnsAction(self.topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
        # The topic policy replaces SNS's default one, so CloudWatch needs its own statement: only
        # this stack's alarms, from this account (CloudWatch sends both keys with an alarm action).
        stack = Stack.of(self)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsOfThisStackPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": [alarm.alarm_arn for alarm in self.alarms]},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )

    def _alarm(self, construct_id: str, description: str, **props: Any) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=f"{limits.PROJECT} {self._stage}: {description}",
            threshold=props.pop("threshold", 1),
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            **props,
        )
        self.alarms.append(alarm)
        return alarm

    def _launch_alarms(self, schedule: Schedule) -> None:
        self._alarm(
            "FailedLaunchesAlarm",
            "the schedule could not start the task (see the dead-letter queue)",
            metric=_rule_metric(schedule.rule, "FailedInvocations", Duration.minutes(5)),
        )
        self._alarm(
            "DeadLetterAlarm",
            "a scheduled launch gave up and landed in the dead-letter queue",
            metric=schedule.dead_letter_queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
        )

    def _metric_filter(self, field: str, *, value: str = "1", at_least: int = 1) -> cloudwatch.Metric:
        """A metric of the job's log lines whose numeric ``field`` (etl_job.metrics) is >= ``at_least``, per stage."""
        logs.MetricFilter(
            self,
            f"{field}Filter",
            log_group=self._log_group,
            filter_pattern=logs.FilterPattern.number_value(f"$.{field}", ">=", at_least),
            metric_namespace=metrics.NAMESPACE,
            metric_name=field,
            metric_value=value,
            dimensions={metrics.DIMENSION_STAGE: f"$.{metrics.DIMENSION_STAGE}"},
            unit=cloudwatch.Unit.COUNT,
        )
        return cloudwatch.Metric(namespace=metrics.NAMESPACE, metric_name=field, dimensions_map={metrics.DIMENSION_STAGE: self._stage})

    def _missed_run_alarm(self, schedule_rule: events.Rule, window_minutes: int) -> None:
        # The job logs one success line per clean run; a metric filter turns it into a metric (no
        # permission, no agent). Silence alone is not a missed run: right after a deploy, or when a
        # pause is lifted, nothing has run yet. A missed run is: within the longest gap between
        # scheduled runs plus the timeout, the schedule fired at least twice (so the earlier run had
        # its whole timeout to finish) and no run succeeded.
        successes = self._metric_filter(metrics.SUCCESSFUL_RUN)
        period = Duration.minutes(window_minutes)
        self._alarm(
            "MissedRunAlarm",
            f"no successful run in the last {window_minutes // 60} h although the schedule fired at least twice "
            "(the longest gap between scheduled runs plus the timeout)",
            metric=cloudwatch.MathExpression(
                expression=f"IF(FILL(fired, 0) >= {MISSED_RUN_MIN_FIRINGS} AND FILL(succeeded, 0) < 1, 1, 0)",
                using_metrics={
                    "fired": _rule_metric(schedule_rule, "Invocations", period),
                    "succeeded": successes.with_(statistic="Sum", period=period),
                },
                period=period,
                label="Scheduled runs missed",
            ),
        )

    def _overlap_alarms(self, window_minutes: int) -> None:
        # Exit 5 (skipped: the previous run is still going) is not a failure; skipping again is.
        skipped = self._metric_filter(metrics.SKIPPED_RUN)
        self._alarm(
            "RepeatedSkipsAlarm",
            f"runs were skipped at least {REPEATED_SKIPS} times in {window_minutes // 60} h because an earlier run "
            "was still going: check why runs take longer than the schedule allows",
            metric=skipped.with_(statistic="Sum", period=Duration.minutes(window_minutes)),
            threshold=REPEATED_SKIPS,
        )
        concurrent = self._metric_filter(metrics.CONCURRENT_RUNS, value=f"$.{metrics.CONCURRENT_RUNS}")
        self._alarm(
            "ConcurrentRunsAlarm",
            "more than one run of the job was loading at the same time (the overlap check could not stop it): "
            "keys may be written twice; stop the extra runs (make stop-runs)",
            metric=concurrent.with_(statistic="Maximum", period=Duration.minutes(5)),
            threshold=2,
        )

    def _ecs_rule(self, construct_id: str, description: str, detail_type: str, detail: dict[str, Any],
                  parts: list[str]) -> None:
        """A rule on ``aws.ecs`` events of ``detail_type`` that sends ``parts`` to the topic as one line."""
        rule = events.Rule(
            self,
            construct_id,
            description=description,
            event_pattern=events.EventPattern(source=["aws.ecs"], detail_type=[detail_type], detail=detail),
        )
        # One line of text: EventBridge delivers a string template as that string, while a template of
        # several lines is delivered in a form AWS does not document (and LocalStack mangles).
        rule.add_target(targets.SnsTopic(self.topic, message=events.RuleTargetInput.from_text(" | ".join(parts))))

    def _task_failures(self, cluster_arn: str, task_family: str, family_arn_prefix: str) -> None:
        field = events.EventField.from_path
        group = self._log_group.log_group_name
        # Every <...> in an input template must name an input path, and no path yields the task id
        # alone, so the log stream is described in words.
        self._ecs_rule(
            "TaskFailedRule",
            f"{task_family}: a task stopped with a non-zero exit code other than 5 (skipped), or failed to start",
            "ECS Task State Change",
            {
                "clusterArn": [cluster_arn],
                "taskDefinitionArn": [{"prefix": family_arn_prefix}],
                "lastStatus": ["STOPPED"],
                "$or": [
                    {"containers": {"exitCode": [{"anything-but": [0, int(ExitCode.SKIPPED_OVERLAP)]}]}},
                    {"stopCode": ["TaskFailedToStart", "SpotInterruption"]},
                ],
            },
            [
                f"{limits.PROJECT} {self._stage}: the job ended without success",
                f"Exit code: {field('$.detail.containers[0].exitCode')} (1 fatal error, 3 some rows not loaded: see the "
                "errors table, 4 timed out, 143 stopped by SIGTERM or Spot; none: it never started)",
                f"Stop code: {field('$.detail.stopCode')}",
                f"Stopped reason: {field('$.detail.stoppedReason')}",
                f"Task: {field('$.detail.taskArn')}",
                f"Logs: log group {group}, log stream {limits.PROJECT}/{limits.CONTAINER_NAME}/ followed by the task id "
                "(the last part of the task ARN)",
                f"Read them: aws logs tail {group} --since 1d",
            ],
        )

    def _refused_launches(self, task_family: str, family_arn_prefix: str) -> None:
        # ECS can accept RunTask and still start nothing (e.g. no Fargate Spot capacity): the call
        # returns `failures`, EventBridge counts a successful invocation, no task exists to emit a
        # state change. The one record of it is the RunTask call in CloudTrail, which reaches
        # EventBridge when the account has a trail (README, Operations).
        field = events.EventField.from_path
        self._ecs_rule(
            "LaunchRefusedRule",
            f"{task_family}: ECS accepted RunTask but started no task (failures in its response)",
            "AWS API Call via CloudTrail",
            {
                "eventSource": ["ecs.amazonaws.com"],
                "eventName": ["RunTask"],
                "requestParameters": {"taskDefinition": [{"prefix": family_arn_prefix}]},
                "responseElements": {"failures": {"reason": [{"exists": True}]}},
            },
            [
                f"{limits.PROJECT} {self._stage}: the job was not started: ECS accepted the launch but started no task",
                f"Reason: {field('$.detail.responseElements.failures[0].reason')}",
                f"Launched by {field('$.detail.userIdentity.arn')} at {field('$.detail.eventTime')}",
                "Nothing ran and nothing was touched; the next scheduled run tries again",
                f"To run it now: make run-now STAGE={self._stage}",
            ],
        )


def _rule_metric(rule: events.IRule, name: str, period: Duration) -> cloudwatch.Metric:
    """An EventBridge metric of one rule (namespace AWS/Events, dimension RuleName), summed."""
    return cloudwatch.Metric(namespace="AWS/Events", metric_name=name, dimensions_map={"RuleName": rule.rule_name}, statistic="Sum", period=period)
