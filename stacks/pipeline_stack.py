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
from stacks.fanout import FanOut, execution_input
from stacks.job import EtlJob
from stacks.nag import acknowledge, skip_checkov
from stacks.network import Network
from stacks.schedule import Schedule
from stacks.schedule_expression import missed_run_window_minutes
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
        network = Network(self, "Network", vpc_id=config.vpc_id, subnet_ids=config.subnet_ids,
                          flow_logs=config.flow_logs, flow_log_retention_days=config.log_retention_days)
        cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            enable_fargate_capacity_providers=config.capacity == "spot",
        )
        acknowledge(
            cluster.node.default_child,
            "ECS4",
            "Container Insights is billed as custom metrics for a cluster that runs one short task a day. "
            "The job logs its own progress and publishes a success metric, and task stops with a non-zero "
            "exit are alerted on; turn Container Insights on when you need per-task CPU and memory graphs.",
        )
        skip_checkov(cluster, "CKV_AWS_65", "Container Insights: see the cdk-nag AwsSolutions-ECS4 acknowledgment on this cluster.")
        job = EtlJob(self, "Job", config=config)
        self._allow_overlap_check(job.task_role, cluster)
        schedule = Schedule(
            self,
            "Schedule",
            expression=config.schedule,
            enabled=config.schedule_enabled,
            cluster=cluster,
            task_definition=job.task_definition,
            subnets=network.subnets,
            security_group=network.security_group,
            assign_public_ip=config.assign_public_ip,
            spot=config.capacity == "spot",
            run_task=config.shards == 1,
        )
        alerts = Alerts(
            self,
            "Alerts",
            stage=config.stage,
            email=config.alarm_email,
            cluster_arn=cluster.cluster_arn,
            task_family=job.task_definition.family,
            log_group=job.log_group,
            schedule_rule=schedule.rule,
            dead_letter_queue=schedule.dead_letter_queue,
            missed_run_window_minutes=missed_run_window_minutes(config.schedule, config.timeout_minutes),
        )

        fan_out = None
        if config.shards > 1:
            fan_out = FanOut(self, "FanOut", config=config, job=job, cluster=cluster, network=network, topic=alerts.topic)
            schedule.start_execution(fan_out.state_machine, execution_input(config.shards))

        Tags.of(self).add("project", limits.PROJECT)
        Tags.of(self).add("stage", config.stage)
        self._outputs(config, cluster, job, network, schedule, fan_out)

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

    def _outputs(self, config: StageConfig, cluster: ecs.ICluster, job: EtlJob, network: Network, schedule: Schedule,
                 fan_out: FanOut | None) -> None:
        subnets = Fn.join(",", network.subnet_ids)
        public_ip = "ENABLED" if config.assign_public_ip else "DISABLED"
        launch = "--capacity-provider-strategy capacityProvider=FARGATE_SPOT" if config.capacity == "spot" else "--launch-type FARGATE"
        outputs = {
            "ClusterName": (cluster.cluster_name, "ECS cluster the job runs in"),
            "TaskDefinitionArn": (job.task_definition.task_definition_arn, "Task definition of the job"),
            "TaskDefinitionFamily": (job.task_definition.family, "Task definition family (all revisions)"),
            "LogGroupName": (job.log_group.log_group_name, "CloudWatch log group of the job"),
            "SubnetIds": (subnets, "Subnets the task is launched in"),
            "SecurityGroupId": (network.security_group.security_group_id, "Security group of the task"),
            "ScheduleRuleName": (schedule.rule.rule_name, "EventBridge rule that starts the job"),
            "DeadLetterQueueUrl": (schedule.dead_letter_queue.queue_url, "Failed launches land here"),
            "RunNowCommand": (
                f"aws ecs run-task --cluster {cluster.cluster_name} --task-definition {job.task_definition.task_definition_arn} "
                f"{launch} --propagate-tags TASK_DEFINITION --network-configuration "
                f"'awsvpcConfiguration={{subnets=[{subnets}],securityGroups=[{network.security_group.security_group_id}],assignPublicIp={public_ip}}}'",
                "Starts one run of the job now",
            ),
            "TailLogsCommand": (f"aws logs tail {job.log_group.log_group_name} --follow", "Follows the job's logs"),
            "Capacity": (config.capacity, "on-demand (FARGATE) or spot (FARGATE_SPOT)"),
            "AssignPublicIp": (public_ip, "Whether the task gets a public IP for egress"),
        }
        if job.secret is not None:
            outputs["SecretArn"] = (job.secret.secret_arn, "Secrets Manager secret holding the Google key")
        else:
            outputs["TaskRoleArn"] = (job.task_role.role_arn, "The AWS identity Google trusts (workload identity)")
            outputs.update(setup_commands(provider=config.workload_identity_provider,
                                          service_account=config.google_service_account,
                                          task_role=job.task_role, stage=config.stage))
        if fan_out is not None:
            arn = fan_out.state_machine.state_machine_arn
            outputs["StateMachineArn"] = (arn, "Step Functions state machine that runs the shards")
            outputs["ShardCount"] = (str(config.shards), "How many shards a run is split into")
            outputs["RunNowCommand"] = (
                f"aws stepfunctions start-execution --state-machine-arn {arn} "
                f"--input '{json.dumps(execution_input(config.shards), separators=(',', ':'))}'",
                "Starts one run of the job now (every shard)",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
