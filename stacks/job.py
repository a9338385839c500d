"""The job: its image, Fargate task definition, roles, log group and Google key secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from etl_job import contract
from stacks import limits
from stacks.config import StageConfig
from stacks.nag import acknowledge, cfn_resource, skip_checkov

ETL_JOB_DIR = Path(__file__).resolve().parent.parent / "etl_job"

# Never change this value: CloudFormation would write it over the real key on the next deploy.
SECRET_PLACEHOLDER = json.dumps(
    {"placeholder": "Put the Google service-account key here: see README, 'Put the Google key in'."}
)

_PLATFORMS = {
    "x86_64": (ecs.CpuArchitecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
    "arm64": (ecs.CpuArchitecture.ARM64, ecr_assets.Platform.LINUX_ARM64),
}


def job_environment(config: StageConfig) -> dict[str, str]:
    """The container's plain environment: the contract's STACK_SET, OPTIONAL_SET where configured and AUTH_PLAIN.

    Never a secret.
    """
    environment = config.environment()
    # config.py allows the provider only with, and requires it for, google_auth=workload_identity.
    if config.workload_identity_provider is not None:
        wif = contract.workload_identity_config(provider=config.workload_identity_provider,
                                                service_account=config.google_service_account)
        environment[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG] = json.dumps(wif, separators=(",", ":"))
    return environment


def _trust_only_tasks_of_this_account(role: iam.IRole) -> None:
    # Confused-deputy guard that the ECS developer guide documents for the task role's trust policy
    # ("Amazon ECS task IAM role": aws:SourceAccount and an aws:SourceArn of ECS in the account). ECS
    # sends no cluster-specific source ARN, so "this account's ECS" is as narrow as it gets.
    stack = Stack.of(role)
    cfn_resource(role).add_property_override(
        "AssumeRolePolicyDocument.Statement.0.Condition",
        {
            "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*", arn_format=ArnFormat.NO_RESOURCE_NAME)},
            "StringEquals": {"aws:SourceAccount": stack.account},
        },
    )


class EtlJob(Construct):
    """One Fargate task definition running ``python -m etl_job`` from an image built from etl_job/."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.secret_key: kms.Key | None = None
        keyless = config.google_auth == "workload_identity"
        # Workload Identity Federation: the task role is the identity Google trusts; no secret at all.
        self.secret = None if keyless else self._google_secret(config.google_credentials_secret, config.secret_kms_key)
        self.log_group = self._log_group(config)
        self.task_definition = self._task_definition(config)
        self.container = self._container(config)
        _trust_only_tasks_of_this_account(self.task_definition.task_role)
        if self.secret is None:
            self._name_task_role(config.stage)
        else:
            self._grant_exact_secret_arn(config.google_credentials_secret)
            if config.google_credentials_secret is None:
                self._only_the_job_reads_the_secret(self.secret, config.break_glass_role_arn)
        self._acknowledge()

    def _task_definition(self, config: StageConfig) -> ecs.FargateTaskDefinition:
        task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=f"{limits.PROJECT}-{config.stage}",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=_PLATFORMS[config.architecture][0],
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        task_definition.add_volume(name="scratch")  # task-local storage, gone when the task ends
        return task_definition

    def _container(self, config: StageConfig) -> ecs.ContainerDefinition:
        """The job's container, from the image built from etl_job/, with the Google key (if any) as an ECS secret."""
        secrets = {} if self.secret is None else {contract.GOOGLE_CREDENTIALS_JSON: ecs.Secret.from_secrets_manager(self.secret)}
        container = self.task_definition.add_container(
            limits.CONTAINER_NAME,
            image=ecs.ContainerImage.from_asset(str(ETL_JOB_DIR), platform=_PLATFORMS[config.architecture][1]),
            essential=True,
            user=limits.CONTAINER_USER,
            readonly_root_filesystem=True,
            stop_timeout=Duration.seconds(limits.STOP_TIMEOUT_SECONDS),
            environment=job_environment(config),
            secrets=secrets,
            logging=ecs.LogDriver.aws_logs(stream_prefix=limits.PROJECT, log_group=self.log_group),
        )
        container.add_mount_points(ecs.MountPoint(source_volume="scratch", container_path=limits.SCRATCH_PATH, read_only=False))
        return container

    def _acknowledge(self) -> None:
        acknowledge(
            cfn_resource(self.task_definition),
            "ECS2",
            "The plain environment holds only non-secret job settings (table ids, batch size, log level, and "
            "with workload_identity the credential configuration: an audience and two URLs), kept in the template "
            "so reviewers see them in cdk diff; the one secret, a Google key, is injected from Secrets Manager "
            "as an ECS secret.",
        )
        acknowledge(
            self.task_definition.obtain_execution_role().node.find_child("DefaultPolicy"),
            "IAM5[Resource::*]",
            "ecr:GetAuthorizationToken is account-wide by design of ECR and cannot name a resource; every "
            "other permission of the execution role names this image repository, log group or secret.",
        )

    @property
    def task_role(self) -> iam.IRole:
        return self.task_definition.task_role

    def _name_task_role(self, stage: str) -> None:
        # Google's provider condition names the role, and the assumed-role ARN it sees (with ECS's
        # 32-character task-id session) must fit google.subject's 127 bytes: a generated role name
        # (up to 64 characters) might not. The region keeps two regions' stacks apart (IAM is global).
        name = limits.TASK_ROLE_NAME.format(prefix=limits.STACK_NAME_PREFIX, stage=stage, region=Stack.of(self).region)
        cfn_resource(self.task_definition.task_role).add_property_override("RoleName", name)

    def _google_secret(self, existing: str | None, customer_managed_key: bool) -> secretsmanager.ISecret:
        if existing is None:
            return self._new_secret(customer_managed_key)
        if not existing.startswith("arn:"):
            return secretsmanager.Secret.from_secret_name_v2(self, "GoogleCredentials", existing)
        # Whether an ARN is complete (NAME-AbCdEf) or partial (NAME) cannot be told from its text: a
        # name may itself end in '-' and six characters. So it is imported as partial (granted as
        # ARN-??????) and _grant_exact_secret_arn grants the ARN as given too, which covers both
        # (Secrets Manager user guide, "Limiting access to specific secrets").
        return secretsmanager.Secret.from_secret_partial_arn(self, "GoogleCredentials", existing)

    def _new_secret(self, customer_managed_key: bool) -> secretsmanager.Secret:
        """The secret the Google key is put in, holding a placeholder until then."""
        if customer_managed_key:
            self.secret_key = kms.Key(
                self,
                "SecretKey",
                description="Encrypts the Google key secret of the ETL job",
                enable_key_rotation=True,
                removal_policy=RemovalPolicy.RETAIN,  # the secret is retained, so its key must be too
            )
        secret = secretsmanager.Secret(
            self,
            "GoogleCredentials",
            description="Google service-account key (JSON) the ETL job uses for BigQuery",
            encryption_key=self.secret_key,
            secret_string_value=SecretValue.unsafe_plain_text(SECRET_PLACEHOLDER),
            # A destroy must never lose the key: the secret outlives the stack.
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            cfn_resource(secret),
            "SMG4",
            "The value is a Google service-account key: only Google can mint a new one, so a Secrets "
            "Manager rotation Lambda would need key-admin rights in the GCP project. Rotate it in GCP and "
            "put the new key with the command in the README; Workload Identity Federation removes the key.",
        )
        if self.secret_key is None:
            skip_checkov(
                secret,
                "CKV_AWS_149",
                "Encrypted at rest with the AWS-managed key aws/secretsmanager, which any principal of the account "
                "may use through Secrets Manager: what stops them is the secret's resource policy, which denies "
                "GetSecretValue to every principal but the job's execution role (and the break-glass role, if "
                "configured). A customer-managed key (~$1 a month) adds a second, matching lock in its key policy; "
                "set secret_kms_key for a stage whose policy requires one.",
            )
        return secret

    def _only_the_job_reads_the_secret(self, secret: secretsmanager.ISecret, break_glass_role_arn: str | None) -> None:
        """Deny reading the key to every principal but the execution role and the break-glass role, whatever
        their IAM policies allow; with a customer-managed key, deny decrypting with it likewise."""
        readers = [self.task_definition.obtain_execution_role().role_arn, *filter(None, [break_glass_role_arn])]
        # Only reads: CloudFormation (creating and updating the secret: CreateSecret, UpdateSecret, PutSecretValue,
        # DescribeSecret; SecretString is write-only in the resource schema, so never read back) and whoever
        # puts the key in keep working, and an administrator can still change this policy.
        only_readers = {"ArnNotEquals": {"aws:PrincipalArn": readers}}
        secret.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyTheJobReadsTheKey",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["secretsmanager:GetSecretValue"],  # BatchGetSecretValue also needs it, per secret
            resources=["*"],
            conditions=only_readers,
        ))
        if self.secret_key is not None:
            self._only_the_job_decrypts_the_secret(self.secret_key, only_readers, break_glass_role_arn)

    @staticmethod
    def _only_the_job_decrypts_the_secret(key: kms.Key, only_readers: dict[str, Any], break_glass_role_arn: str | None) -> None:
        stack = Stack.of(key)
        # Decrypting (or re-encrypting under another key) is reading; encrypting a new value is not.
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyTheJobDecryptsTheKey",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"],
            resources=["*"],
            conditions=only_readers,
        ))
        if break_glass_role_arn is not None:
            key.add_to_resource_policy(iam.PolicyStatement(
                sid="BreakGlassDecryptsThroughSecretsManager",
                principals=[iam.ArnPrincipal(break_glass_role_arn)],
                actions=["kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com",
                                             "kms:CallerAccount": stack.account}},
            ))

    def _grant_exact_secret_arn(self, existing: str | None) -> None:
        if existing is not None and existing.startswith("arn:"):
            self.task_definition.obtain_execution_role().add_to_principal_policy(
                iam.PolicyStatement(actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                                    resources=[existing])
            )

    def _log_group(self, config: StageConfig) -> logs.LogGroup:
        key = self._logs_key(config.stage) if config.log_kms_key else None
        log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            removal_policy=RemovalPolicy.RETAIN if config.log_removal_policy == "retain" else RemovalPolicy.DESTROY,
        )
        if key is None:
            skip_checkov(
                log_group,
                "CKV_AWS_158",
                "CloudWatch Logs encrypts every log group at rest with a service key. A customer-managed key costs "
                "~$1 a month; set log_kms_key to true in cdk.json for a stage whose policy requires one.",
            )
        # RetentionDays is an enum of names in Python; the config holds the number of days.
        cfn_resource(log_group).add_property_override("RetentionInDays", config.log_retention_days)
        return log_group

    def _logs_key(self, stage: str) -> kms.Key:
        key = kms.Key(
            self,
            "LogsKey",
            description=f"Encrypts the {limits.PROJECT} {stage} job logs",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        stack = Stack.of(self)
        # Only CloudWatch Logs, and only for log groups of this account and region.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs", resource="log-group", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
                        )
                    }
                },
            )
        )
        return key
