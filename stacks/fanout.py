"""Past one task: a Step Functions state machine that runs the job as N shards, one Fargate task each.

A Map over the shard indices runs, at most ``max_parallel_shards`` at a time, one ECS RunTask per
shard with the ``.sync`` integration (the state waits for the task to stop and fails on a non-zero
exit), the shard passed as container overrides (``contract.SHARD_SET``). Launch failures
(capacity, throttling: ``LAUNCH_ERRORS``) are retried with backoff; each shard has a
timeout. A failed shard does not stop the others: after the Map, one alert names every failed
shard with its error and exit code, and the execution fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from etl_job import contract
from stacks import limits
from stacks.config import StageConfig
from stacks.launch import Launch
from stacks.nag import acknowledge, cfn_resource

if TYPE_CHECKING:
    from stacks.alerts import Alerts
    from stacks.job import EtlJob
    from stacks.network import Network

# Exit codes as the alert explains them (etl_job/__main__.py).
EXIT_CODES = ("1 fatal error, 3 some rows not loaded (see the errors table), 4 timed out, "
              "5 skipped (the same shard of an earlier run still going), 143 stopped by SIGTERM or Spot; "
              "none: the task never ran to an exit (launch failed, shard timed out, stopped)")


# What a failed launch raises: an ECS API error (throttling, and capacity per AWS re:Post
# "ecs-fargate-runtask-capacity"), or RunTask's non-empty Failures list, which the .sync integration
# turns into AmazonECS.Unknown (Step Functions developer guide, "Run Amazon ECS or Fargate tasks").
LAUNCH_ERRORS = ("ECS.AmazonECSException", "AmazonECS.Unknown")


def shard_timeout_seconds(timeout_minutes: int) -> int:
    """How long one shard may take: the job's own timeout, its stop grace, and time to launch."""
    return timeout_minutes * 60 + limits.STOP_TIMEOUT_SECONDS + limits.SHARD_LAUNCH_ALLOWANCE_SECONDS


def execution_input(shards: int) -> dict[str, list[int]]:
    """The input the schedule starts an execution with: every shard index."""
    return {"shards": list(range(shards))}


class FanOut(Construct):
    """The state machine that runs ``config.shards`` tasks of ``job`` in ``cluster`` and alerts once on failed shards."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, job: EtlJob, cluster: ecs.ICluster,
                 network: Network, launch: Launch, alerts: Alerts) -> None:
        super().__init__(scope, construct_id)
        self.execution_input = execution_input(config.shards)
        graph = self._graph(config, job, cluster, network, launch, alerts.topic)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "states.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}}
            ),
            description=f"Runs the {limits.PROJECT} {config.stage} shards",
        )
        self.state_machine = self._state_machine(config.stage, graph, job)
        self._grant(graph, cluster, job.task_definition, alerts.topic)
        # CDK makes the state machine depend on its role and the role's policy; the role is already
        # referenced (RoleArn), so cfn-lint flags that dependency as redundant (W3005). Keep the policy.
        policy = cfn_resource(self.role.node.find_child("DefaultPolicy"))
        cfn_resource(self.state_machine).add_override("DependsOn", [Stack.of(self).get_logical_id(policy)])
        self._acknowledge(cluster)

    def _graph(self, config: StageConfig, job: EtlJob, cluster: ecs.ICluster, network: Network, launch: Launch,
               topic: sns.ITopic) -> sfn.StateGraph:
        """Every shard through RunShard (at most max_parallel_shards at a time), then one alert if any failed."""
        run_shard = self._run_shard(config, job, cluster, network, launch)
        shards_map = sfn.Map(
            self,
            "Shards",
            items_path="$.shards",
            item_selector={"index.$": "$$.Map.Item.Value"},
            max_concurrency=config.max_parallel_shards,
            result_path="$.results",
        )
        shards_map.item_processor(run_shard.next(sfn.Pass(self, "ShardSucceeded", parameters={
            "index.$": "$.index", "failed": False, "task_arn.$": "$.task.task_arn",
        })))
        # A JSONPath filter that matches nothing is a States.Runtime error ("could not be found"), and a
        # wildcard path over one result yields a value, not a list (both seen on LocalStack's engine,
        # which follows AWS here): so look for a failed result in the results' JSON text, and list
        # the failed ones with a filter only once there is one.
        collect = sfn.Pass(self, "CollectFailures", parameters={
            "shards.$": "$.shards", "results.$": "$.results", "results_json.$": "States.JsonToString($.results)",
        })
        list_failures = sfn.Pass(self, "ListFailures", parameters={
            "shards.$": "$.shards", "failed.$": "$.results[?(@.failed == true)]",
        })
        definition = shards_map.next(collect).next(
            sfn.Choice(self, "AnyShardFailed")
            .when(sfn.Condition.string_matches("$.results_json", '*"failed":true*'),
                  list_failures.next(self._alert(config, topic)))
            .otherwise(sfn.Succeed(self, "AllShardsSucceeded"))
        )
        return sfn.StateGraph(definition.start_state, "fan-out")

    def _state_machine(self, stage: str, graph: sfn.StateGraph, job: EtlJob) -> sfn.StateMachine:
        # Rendered here rather than by StateMachine: RunTask names this stack's task-definition revision
        # (EcsRunTask names only the family, which runs whatever revision is newest).
        asl = graph.to_graph_json()
        asl["States"]["Shards"]["ItemProcessor"]["States"]["RunShard"]["Parameters"]["TaskDefinition"] = (
            job.task_definition.task_definition_arn
        )
        return sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{limits.PROJECT}-{stage}",
            definition_body=sfn.DefinitionBody.from_string(Stack.of(self).to_json_string(asl)),
            state_machine_type=sfn.StateMachineType.STANDARD,
            role=self.role,
            logs=sfn.LogOptions(destination=job.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=False,
        )

    def _run_shard(self, config: StageConfig, job: EtlJob, cluster: ecs.ICluster, network: Network,
                   launch: Launch) -> tasks.EcsRunTask:
        """One shard: RunTask .sync with the shard as container overrides, launch retries, a timeout, a catch."""
        strategy = [ecs.CapacityProviderStrategy(capacity_provider=item["capacityProvider"], weight=item["weight"])
                    for item in launch.capacity_provider_strategy()]
        shard_index = sfn.JsonPath.format("{}", sfn.JsonPath.string_at("$.index"))
        run_shard = tasks.EcsRunTask(
            self,
            "RunShard",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            cluster=cluster,
            task_definition=job.task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(
                platform_version=ecs.FargatePlatformVersion.LATEST,
                capacity_provider_options=tasks.CapacityProviderOptions.custom(strategy) if strategy else None,
            ),
            subnets=network.subnets,
            security_groups=[network.security_group],
            assign_public_ip=launch.assign_public_ip,
            propagated_tag_source=ecs.PropagatedTagSource.TASK_DEFINITION,
            container_overrides=[tasks.ContainerOverride(container_definition=job.container, environment=[
                tasks.TaskEnvironmentVariable(name=contract.SHARD_INDEX, value=shard_index),
                tasks.TaskEnvironmentVariable(name=contract.SHARD_COUNT, value=str(config.shards)),
            ])],
            task_timeout=sfn.Timeout.duration(Duration.seconds(shard_timeout_seconds(config.timeout_minutes))),
            result_selector={"task_arn.$": "$.TaskArn", "stopped_reason.$": "$.StoppedReason"},
            result_path="$.task",
        )
        run_shard.add_retry(
            errors=list(LAUNCH_ERRORS),
            interval=Duration.seconds(limits.SHARD_LAUNCH_RETRY_INTERVAL_SECONDS),
            backoff_rate=2,
            max_attempts=limits.SHARD_LAUNCH_RETRY_ATTEMPTS,
            jitter_strategy=sfn.JitterType.FULL,
        )
        run_shard.add_catch(self._record_failure(), errors=["States.ALL"], result_path="$.error")
        return run_shard

    def _alert(self, config: StageConfig, topic: sns.ITopic) -> sfn.IChainable:
        """One message to the alert topic naming every failed shard, then fail the execution."""
        stage = config.stage
        alert = tasks.SnsPublish(
            self,
            "AlertFailedShards",
            topic=topic,
            subject=f"{limits.PROJECT} {stage}: shards failed",
            message=sfn.TaskInput.from_json_path_at(sfn.JsonPath.format(
                f"The {limits.PROJECT} job ({stage}): {{}} of {config.shards} shards failed in execution {{}}. "
                f"Each failed shard, with its error and exit code ({EXIT_CODES}): {{}}. "
                f"The other shards are complete. Rerun one shard: make run-now STAGE={stage} SHARD=<index>",
                sfn.JsonPath.string_at("States.ArrayLength($.failed)"),
                sfn.JsonPath.string_at("$$.Execution.Id"),
                sfn.JsonPath.string_at("States.JsonToString($.failed)"),
            )),
            result_path=sfn.JsonPath.DISCARD,
        )
        alert.add_retry(errors=["States.ALL"], max_attempts=3)
        return alert.next(sfn.Fail(self, "ShardsFailed", error="ShardsFailed", cause="one or more shards failed; see the alert"))

    def _grant(self, graph: sfn.StateGraph, cluster: ecs.ICluster, task_definition: ecs.TaskDefinition,
               topic: sns.ITopic) -> None:
        """What the states use, narrower than the integrations' defaults where ECS allows it."""
        narrowed = {"ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks"}
        for statement in graph.policy_statements:
            if not narrowed & set(statement.actions):  # iam:PassRole, the .sync events rule, sns:Publish
                self.role.add_to_policy(statement)
        in_cluster = {"ArnEquals": {"ecs:cluster": cluster.cluster_arn}}
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecs:RunTask"], resources=[task_definition.task_definition_arn], conditions=in_cluster,
        ))
        tasks_of_cluster = Stack.of(self).format_arn(service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*")
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecs:StopTask", "ecs:DescribeTasks"], resources=[tasks_of_cluster], conditions=in_cluster,
        ))
        # RunTask with propagated tags needs the caller to be allowed to tag the task it creates.
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecs:TagResource"], resources=[tasks_of_cluster],
            conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
        ))
        if topic.master_key is not None:  # publishing to an encrypted topic encrypts with its key
            topic.master_key.grant(self.role, "kms:Decrypt", "kms:GenerateDataKey")

    def _record_failure(self) -> sfn.IChainable:
        """A failed shard's result: its index, error and, when the task ran to an exit, the exit code."""

        def failure(name: str, **fields: str) -> sfn.Pass:
            return sfn.Pass(self, name, parameters={"index.$": "$.index", "failed": True, **fields})

        exit_code = failure(
            "FailedWithExitCode",
            **{"error.$": "$.error.Error", "exit_code.$": "$.stopped.Containers[0].ExitCode",
               "reason.$": "$.stopped.StoppedReason"},
        )
        no_exit_code = failure("FailedWithoutExitCode", **{"error.$": "$.error.Error", "exit_code": "none",
                                                           "reason.$": "$.error.Cause"})
        read_task = sfn.Pass(
            self,
            "ReadStoppedTask",
            parameters={"index.$": "$.index", "error.$": "$.error", "stopped.$": "States.StringToJson($.error.Cause)"},
        )
        # A task that ran and stopped with a non-zero exit fails the state with its description as the cause.
        ran = sfn.Condition.and_(
            sfn.Condition.string_equals("$.error.Error", "States.TaskFailed"),
            sfn.Condition.string_matches("$.error.Cause", "{*"),
        )
        return sfn.Choice(self, "ShardFailed").when(
            ran,
            read_task.next(
                sfn.Choice(self, "HasExitCode")
                .when(sfn.Condition.is_present("$.stopped.Containers[0].ExitCode"), exit_code)
                .otherwise(no_exit_code)
            ),
        ).otherwise(no_exit_code)

    def _acknowledge(self, cluster: ecs.ICluster) -> None:
        acknowledge(
            cfn_resource(self.state_machine),
            "SF2",
            "X-Ray would trace only the state machine's own steps: the work runs in the ECS tasks, which emit no "
            "X-Ray segments. The execution history (kept 90 days) and the ALL-level execution log already show "
            "each shard's start, retries, end and exit code; tracing would add xray:Put* on '*' to the role for no "
            "information an operator acts on.",
        )
        policy = self.role.node.find_child("DefaultPolicy")
        cluster_id = Stack.of(self).get_logical_id(cfn_resource(cluster))
        acknowledge(
            policy,
            f"IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/<{cluster_id}>/*]",
            "ecs:StopTask and ecs:DescribeTasks on the tasks of this one cluster: the .sync integration polls and, "
            "on timeout or stop, stops the shard's task, whose id is not known before launch; ecs:TagResource on "
            "them only while RunTask creates them, to propagate the project and stage tags.",
        )
        acknowledge(
            policy,
            "IAM5[Resource::*]",
            "The CloudWatch Logs log-delivery actions (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
            "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, DescribeLogGroups) "
            "support no resource-level permissions; Step Functions needs them to deliver its execution log.",
        )
