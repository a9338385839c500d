"""The one stack: a scheduled ETL job on ECS Fargate."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Fn, Stack, Tags
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import limits
from stacks.alerts import Alerts
from stacks.config import StageConfig
from stacks.fanout import FanOut
from stacks.job import EtlJob
from stacks.launch import Launch
from stacks.nag import acknowledge, cfn_resource, skip_checkov
from stacks.network import Network
from stacks.schedule import Schedule
from stacks.workload_identity import setup_commands


class EtlPipelineStack(Stack):
    """Network, cluster, job and schedule for one stage; tags every resource with project and stage."""

    def __init__(self, scope: Construct, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            config.stack_name,
            description=f"Scheduled BigQuery ETL job on ECS Fargate ({config.stage})",
            **kwargs,
        )
        launch = Launch(capacity=config.capacity, assign_public_ip=config.assign_public_ip)
        network = Network(self, "Network", vpc_id=config.vpc_id, subnet_ids=config.subnet_ids,
                          flow_logs=config.flow_logs, flow_log_retention_days=config.log_retention_days)
        cluster = self._cluster(network, launch)
        job = EtlJob(self, "Job", config=config)
        self._allow_overlap_check(job.task_role, cluster)
        schedule = Schedule(self, "Schedule", expression=config.schedule, enabled=config.schedule_enabled, job=job)
        alerts = Alerts(self, "Alerts", config=config, cluster=cluster, job=job, schedule=schedule)
        fan_out = None
        if config.shards > 1:
            fan_out = FanOut(self, "FanOut", config=config, job=job, cluster=cluster, network=network, launch=launch,
                             alerts=alerts)
            schedule.start_fan_out(fan_out)
        else:
            schedule.run_task(job=job, cluster=cluster, network=network, launch=launch)

        Tags.of(self).add("project", limits.PROJECT)
        Tags.of(self).add("stage", config.stage)
        self._outputs(config, launch, cluster, job, network, schedule, fan_out)

    def _cluster(self, network: Network, launch: Launch) -> ecs.Cluster:
        cluster = ecs.Cluster(self, "Cluster", vpc=network.vpc, enable_fargate_capacity_providers=launch.spot)
        acknowledge(
            cfn_resource(cluster),
            "ECS4",
            "Container Insights is billed as custom metrics for a cluster that runs one short task a day. "
            "The job logs its own progress and publishes a success metric, and task stops with a non-zero "
            "exit are alerted on; turn Container Insights on when you need per-task CPU and memory graphs.",
        )
        skip_checkov(cluster, "CKV_AWS_65", "Container Insights: see the cdk-nag AwsSolutions-ECS4 acknowledgment on this cluster.")
        return cluster

    @staticmethod
    def _allow_overlap_check(task_role: iam.IRole, cluster: ecs.ICluster) -> None:
        # The job asks ECS whether an earlier run is still going; ListTasks and DescribeTasks
        # take no task ARN as a resource, so they are scoped by the cluster condition instead.
        task_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="SeeOtherRunsOfThisJob",
                actions=["ecs:ListTasks", "ecs:DescribeTasks"],
                resources=["*"],
                conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
            )
        )
        acknowledge(
            task_role.node.find_child("DefaultPolicy"),
            "IAM5[Resource::*]",
            "ecs:ListTasks has no resource-level permission (its resource must be '*') and the job calls "
            "DescribeTasks with task ARNs it has just listed; both are limited to this job's cluster by the "
            "ecs:cluster condition, and they only read task status.",
        )

    def _outputs(self, config: StageConfig, launch: Launch, cluster: ecs.ICluster, job: EtlJob, network: Network,
                 schedule: Schedule, fan_out: FanOut | None) -> None:
        """The stack's outputs: what operators and ops/runs.py (by these names) read."""
        outputs = {
            "ClusterName": (cluster.cluster_name, "ECS cluster the job runs in"),
            "TaskDefinitionArn": (job.task_definition.task_definition_arn, "Task definition of the job"),
            "TaskDefinitionFamily": (job.task_definition.family, "Task definition family (all revisions)"),
            "LogGroupName": (job.log_group.log_group_name, "CloudWatch log group of the job"),
            "SubnetIds": (Fn.join(",", network.subnet_ids), "Subnets the task is launched in"),
            "SecurityGroupId": (network.security_group.security_group_id, "Security group of the task"),
            "ScheduleRuleName": (schedule.rule.rule_name, "EventBridge rule that starts the job"),
            "DeadLetterQueueUrl": (schedule.dead_letter_queue.queue_url, "Failed launches land here"),
            "RunNowCommand": (_run_task_command(launch, cluster, job, network), "Starts one run of the job now"),
            "TailLogsCommand": (f"aws logs tail {job.log_group.log_group_name} --follow", "Follows the job's logs"),
            "Capacity": (launch.capacity, "on-demand (FARGATE) or spot (FARGATE_SPOT)"),
            "AssignPublicIp": (launch.public_ip, "Whether the task gets a public IP for egress"),
        }
        if job.secret is not None:
            outputs["SecretArn"] = (job.secret.secret_arn, "Secrets Manager secret holding the Google key")
        elif config.workload_identity_provider is not None:  # keyless: config.py requires the provider then
            outputs["TaskRoleArn"] = (job.task_role.role_arn, "The AWS identity Google trusts (workload identity)")
            outputs.update(setup_commands(provider=config.workload_identity_provider,
                                          service_account=config.google_service_account,
                                          task_role=job.task_role, stage=config.stage))
        if fan_out is not None:
            outputs.update(_fan_out_outputs(fan_out, config.shards))
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)


def _run_task_command(launch: Launch, cluster: ecs.ICluster, job: EtlJob, network: Network) -> str:
    """`aws ecs run-task` as the schedule starts the task."""
    subnets = Fn.join(",", network.subnet_ids)
    return (
        f"aws ecs run-task --cluster {cluster.cluster_name} --task-definition {job.task_definition.task_definition_arn} "
        f"{launch.cli_arguments()} --propagate-tags TASK_DEFINITION --network-configuration "
        f"'awsvpcConfiguration={{subnets=[{subnets}],securityGroups=[{network.security_group.security_group_id}],"
        f"assignPublicIp={launch.public_ip}}}'"
    )


def _fan_out_outputs(fan_out: FanOut, shards: int) -> dict[str, tuple[str, str]]:
    """With shards > 1 a run is an execution of the fan-out's state machine."""
    arn = fan_out.state_machine.state_machine_arn
    return {
        "StateMachineArn": (arn, "Step Functions state machine that runs the shards"),
        "ShardCount": (str(shards), "How many shards a run is split into"),
        "RunNowCommand": (
            f"aws stepfunctions start-execution --state-machine-arn {arn} "
            f"--input '{json.dumps(fan_out.execution_input, separators=(',', ':'))}'",
            "Starts one run of the job now (every shard)",
        ),
    }
