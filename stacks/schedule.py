"""When the job runs: an EventBridge rule that launches the task (or the fan-out), with retries and a dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks import limits
from stacks.nag import acknowledge, skip_checkov


class Schedule(Construct):
    """Runs the task definition on Fargate on a cron or rate schedule.

    With ``run_task=False`` the rule gets no ECS target: the caller attaches the fan-out state
    machine with ``start_execution``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        expression: str,
        enabled: bool,
        cluster: ecs.ICluster,
        task_definition: ecs.FargateTaskDefinition,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        assign_public_ip: bool,
        spot: bool,
        run_task: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        # Launches that still fail after the retries land here instead of vanishing.
        self.dead_letter_queue = sqs.Queue(
            self,
            "LaunchDeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(limits.DLQ_RETENTION_DAYS),
        )
        acknowledge(
            self.dead_letter_queue.node.default_child,
            "SQS3",
            "This queue is itself the dead-letter queue of the schedule rule's ECS target (the rule is not "
            "a queue, so cdk-nag cannot see the relation); an alarm fires when a message lands in it.",
        )
        skip_checkov(
            self.dead_letter_queue,
            "CKV_AWS_27",
            "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which this check does not recognise; "
            "it only accepts a KMS key, and the AWS-managed alias/aws/sqs key cannot be used by EventBridge.",
        )
        self._rule_name = rule_name = f"{task_definition.family}-schedule"
        self.rule = events.Rule(
            self,
            "Rule",
            # Named, so that the events role's trust policy can name the rule without a dependency cycle.
            rule_name=rule_name,
            description=f"Runs {task_definition.family} on {expression}",
            schedule=events.Schedule.expression(expression),
            enabled=enabled,
        )
        if run_task:
            self._run_task(cluster, task_definition, subnets, security_group, assign_public_ip, spot)

    def start_execution(self, state_machine: sfn.IStateMachine, execution_input: dict) -> None:
        """Start an execution of ``state_machine`` with ``execution_input`` on the schedule (instead of a task)."""
        self.rule.add_target(targets.SfnStateMachine(
            state_machine,
            input=events.RuleTargetInput.from_object(execution_input),
            retry_attempts=limits.LAUNCH_RETRY_ATTEMPTS,
            max_event_age=Duration.minutes(limits.LAUNCH_MAX_EVENT_AGE_MINUTES),
            dead_letter_queue=self.dead_letter_queue,
        ))
        self._trust_only_this_rule(state_machine.node.find_child("EventsRole"))

    def _run_task(self, cluster: ecs.ICluster, task_definition: ecs.FargateTaskDefinition,
                  subnets: ec2.SubnetSelection, security_group: ec2.ISecurityGroup, assign_public_ip: bool,
                  spot: bool) -> None:
        target = targets.EcsTask(
            cluster=cluster,
            task_definition=task_definition,
            task_count=1,
            launch_type=ecs.LaunchType.FARGATE,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            subnet_selection=subnets,
            security_groups=[security_group],
            propagate_tags=ecs.PropagatedTagSource.TASK_DEFINITION,
            retry_attempts=limits.LAUNCH_RETRY_ATTEMPTS,
            max_event_age=Duration.minutes(limits.LAUNCH_MAX_EVENT_AGE_MINUTES),
            dead_letter_queue=self.dead_letter_queue,
        )
        self.rule.add_target(target)
        cfn_rule: events.CfnRule = self.rule.node.default_child  # type: ignore[assignment]
        # Set here rather than on EcsTask, which refuses a public IP for imported subnets it cannot
        # classify; with subnet_ids from config the operator knows whether they are public.
        cfn_rule.add_property_override(
            "Targets.0.EcsParameters.NetworkConfiguration.AwsVpcConfiguration.AssignPublicIp",
            "ENABLED" if assign_public_ip else "DISABLED",
        )
        cluster_id = Stack.of(self).get_logical_id(cluster.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            task_definition.node.find_child("EventsRole").node.find_child("DefaultPolicy"),
            f"IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:*:task/<{cluster_id}>/*]",
            "ecs:TagResource on the tasks of this one cluster, so the rule can propagate the project and "
            "stage tags to the tasks it starts; task ids are not known before launch.",
        )
        self._trust_only_this_rule(task_definition.node.find_child("EventsRole"))
        if spot:
            # EcsTask has no capacity-provider property; CloudFormation does. LaunchType and a
            # capacity-provider strategy exclude each other.
            cfn_rule.add_property_deletion_override("Targets.0.EcsParameters.LaunchType")
            cfn_rule.add_property_override(
                "Targets.0.EcsParameters.CapacityProviderStrategy",
                [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}],
            )

    def _trust_only_this_rule(self, role: iam.Role) -> None:
        # Confused-deputy guard documented by EventBridge for the roles it assumes to invoke targets
        # (EventBridge user guide, "Cross-service confused deputy prevention"): this rule of this account.
        stack = Stack.of(self)
        rule_arn = stack.format_arn(service="events", resource="rule", resource_name=self._rule_name)
        role.node.default_child.add_property_override(  # type: ignore[union-attr]
            "AssumeRolePolicyDocument.Statement.0.Condition",
            {"ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": stack.account}},
        )
