"""When the job runs: an EventBridge rule that launches the task (or the fan-out), with retries and a dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from stacks import limits
from stacks.launch import Launch
from stacks.nag import acknowledge, cfn_resource, skip_checkov

if TYPE_CHECKING:
    from stacks.fanout import FanOut
    from stacks.job import EtlJob
    from stacks.network import Network

# Where the rule's one target keeps its ECS launch parameters in CloudFormation.
ECS_PARAMETERS = "Targets.0.EcsParameters"


class Schedule(Construct):
    """Starts ``job`` on a cron or rate schedule: the stack then points the rule at one task of the job
    (``run_task``) or at the fan-out (``start_fan_out``)."""

    def __init__(self, scope: Construct, construct_id: str, *, expression: str, enabled: bool, job: EtlJob) -> None:
        super().__init__(scope, construct_id)
        family = job.task_definition.family
        self.dead_letter_queue = self._dead_letter_queue()
        self._rule_name = f"{family}-schedule"
        self.rule = events.Rule(
            self,
            "Rule",
            # Named, so that the events role's trust policy can name the rule without a dependency cycle.
            rule_name=self._rule_name,
            description=f"Runs {family} on {expression}",
            schedule=events.Schedule.expression(expression),
            enabled=enabled,
        )

    def run_task(self, *, job: EtlJob, cluster: ecs.ICluster, network: Network, launch: Launch) -> None:
        """Start one task of ``job`` in ``cluster`` on the schedule, launched as ``launch`` says."""
        self.rule.add_target(targets.EcsTask(
            cluster=cluster,
            task_definition=job.task_definition,
            task_count=1,
            launch_type=ecs.LaunchType.FARGATE,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            subnet_selection=network.subnets,
            security_groups=[network.security_group],
            propagate_tags=ecs.PropagatedTagSource.TASK_DEFINITION,
            retry_attempts=limits.LAUNCH_RETRY_ATTEMPTS,
            max_event_age=Duration.minutes(limits.LAUNCH_MAX_EVENT_AGE_MINUTES),
            dead_letter_queue=self.dead_letter_queue,
        ))
        self._launch_as(launch)
        events_role = job.task_definition.node.find_child("EventsRole")
        cluster_id = Stack.of(self).get_logical_id(cfn_resource(cluster))
        acknowledge(
            events_role.node.find_child("DefaultPolicy"),
            f"IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:*:task/<{cluster_id}>/*]",
            "ecs:TagResource on the tasks of this one cluster, so the rule can propagate the project and "
            "stage tags to the tasks it starts; task ids are not known before launch.",
        )
        self._trust_only_this_rule(events_role)

    def start_fan_out(self, fan_out: FanOut) -> None:
        """Start an execution of the fan-out's state machine, every shard, on the schedule (instead of a task)."""
        self.rule.add_target(targets.SfnStateMachine(
            fan_out.state_machine,
            input=events.RuleTargetInput.from_object(fan_out.execution_input),
            retry_attempts=limits.LAUNCH_RETRY_ATTEMPTS,
            max_event_age=Duration.minutes(limits.LAUNCH_MAX_EVENT_AGE_MINUTES),
            dead_letter_queue=self.dead_letter_queue,
        ))
        self._trust_only_this_rule(fan_out.state_machine.node.find_child("EventsRole"))

    def _dead_letter_queue(self) -> sqs.Queue:
        # Launches that still fail after the retries land here instead of vanishing.
        queue = sqs.Queue(
            self,
            "LaunchDeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(limits.DLQ_RETENTION_DAYS),
        )
        acknowledge(
            cfn_resource(queue),
            "SQS3",
            "This queue is itself the dead-letter queue of the schedule rule's ECS target (the rule is not "
            "a queue, so cdk-nag cannot see the relation); an alarm fires when a message lands in it.",
        )
        skip_checkov(
            queue,
            "CKV_AWS_27",
            "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which this check does not recognise; "
            "it only accepts a KMS key, and the AWS-managed alias/aws/sqs key cannot be used by EventBridge.",
        )
        return queue

    def _launch_as(self, launch: Launch) -> None:
        # Set here rather than on EcsTask, which has no capacity-provider property and refuses a public IP
        # for imported subnets it cannot classify (with subnet_ids from config the operator knows whether
        # they are public). LaunchType and a capacity-provider strategy exclude each other.
        cfn_rule = cfn_resource(self.rule)
        cfn_rule.add_property_override(f"{ECS_PARAMETERS}.NetworkConfiguration.AwsVpcConfiguration.AssignPublicIp",
                                       launch.public_ip)
        cfn_rule.add_property_deletion_override(f"{ECS_PARAMETERS}.LaunchType")
        for name, value in launch.run_task_parameters().items():
            cfn_rule.add_property_override(f"{ECS_PARAMETERS}.{_pascal(name)}", _cloudformation_case(value))

    def _trust_only_this_rule(self, role: IConstruct) -> None:
        # Confused-deputy guard documented by EventBridge for the roles it assumes to invoke targets
        # (EventBridge user guide, "Cross-service confused deputy prevention"): this rule of this account.
        stack = Stack.of(self)
        rule_arn = stack.format_arn(service="events", resource="rule", resource_name=self._rule_name)
        cfn_resource(role).add_property_override(
            "AssumeRolePolicyDocument.Statement.0.Condition",
            {"ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": stack.account}},
        )


def _cloudformation_case(value: Any) -> Any:
    """ECS API keys (capacityProvider) as CloudFormation spells them (CapacityProvider), at any depth; values unchanged."""
    if isinstance(value, list):
        return [_cloudformation_case(item) for item in value]
    if isinstance(value, dict):
        return {_pascal(key): _cloudformation_case(item) for key, item in value.items()}
    return value


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]
