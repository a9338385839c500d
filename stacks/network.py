"""Where the task runs: public subnets with no NAT gateway, or the subnets given in config."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.nag import acknowledge, cfn_resource, skip_checkov


class Network(Construct):
    """The VPC, the subnets the task is launched in, and its egress-only security group."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    subnet_ids: list[str]
    flow_log_bucket: s3.Bucket  # only in a VPC of its own, with flow_logs

    def __init__(self, scope: Construct, construct_id: str, *, vpc_id: str | None, subnet_ids: tuple[str, ...],
                 flow_logs: bool = False, flow_log_retention_days: int = 365) -> None:
        super().__init__(scope, construct_id)
        if vpc_id is None:
            self._own_vpc(flow_logs=flow_logs, flow_log_retention_days=flow_log_retention_days)
        else:
            self._existing_vpc(vpc_id, subnet_ids)
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="ETL task: no ingress; egress HTTPS only (BigQuery, ECR, CloudWatch Logs, Secrets Manager)",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to Google and AWS APIs")

    def _own_vpc(self, *, flow_logs: bool, flow_log_retention_days: int) -> None:
        # Public subnets only: the task gets a public IP for egress, so no NAT gateway
        # (~$33 a month each) sits idle between runs.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
            # Nothing uses the default security group; its default rules (all traffic between its
            # members, all egress) are removed, as Security Hub EC2.2 asks.
            restrict_default_security_group=True,
        )
        _accept_restrict_default_sg_function(self)
        if flow_logs:
            self.flow_log_bucket = self._flow_logs(flow_log_retention_days)
        else:
            acknowledge(
                cfn_resource(self.vpc),
                "VPC7",
                "The VPC only carries this job's outbound HTTPS: its one security group admits no inbound "
                "traffic and no other workload runs in it. Flow logs (to S3) are one config key away: "
                "flow_logs=true, on in the prod stage; or deploy into an existing VPC that has them.",
            )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        self.subnet_ids = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PUBLIC).subnet_ids

    def _existing_vpc(self, vpc_id: str, subnet_ids: tuple[str, ...]) -> None:
        # Imported by id, with no look-up: synth stays offline and needs no credentials.
        self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=vpc_id, availability_zones=["unused"])
        subnets = [ec2.Subnet.from_subnet_id(self, f"Subnet{i}", s) for i, s in enumerate(subnet_ids)]
        for subnet in subnets:
            Validations.of(subnet).acknowledge(Acknowledgment(
                id="Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId",
                reason="The task is only launched into these subnets by id; nothing in the stack reads their route tables.",
            ))
        self.subnets = ec2.SubnetSelection(subnets=subnets)
        self.subnet_ids = list(subnet_ids)

    def _flow_logs(self, retention_days: int) -> s3.Bucket:
        """Every accepted and rejected flow of the VPC, to an encrypted S3 bucket that forgets them after
        ``retention_days`` (S3 is the cheapest destination: no ingestion charge, no IAM role)."""
        bucket = s3.Bucket(
            self,
            "FlowLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(retention_days))],
            # Flow logs are evidence: a destroy keeps them (the lifecycle rule still expires them).
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_s3(bucket), traffic_type=ec2.FlowLogTrafficType.ALL
        )
        acknowledge(
            cfn_resource(bucket),
            "S1",
            "This bucket holds only VPC flow logs written by the log delivery service; server access logs of a "
            "log bucket would need a second bucket, and CloudTrail records who reads or changes it.",
        )
        skip_checkov(bucket, "CKV_AWS_18", "A log bucket itself: see the cdk-nag AwsSolutions-S1 acknowledgment on it.")
        skip_checkov(bucket, "CKV_AWS_21", "Flow log objects are written once and never changed; versions would "
                     "only keep expired logs longer than the lifecycle rule allows.")
        return bucket


def _accept_restrict_default_sg_function(network: Network) -> None:
    """Checkov findings on the Lambda-backed custom resource that ``restrict_default_security_group`` adds: it runs
    once per deploy (and on delete), only revokes the default security group's rules, and its code is the CDK's.
    (Its role's one managed policy, AWSLambdaBasicExecutionRole for its logs, is accepted in tests/stacks/test_security.py;
    cdk-nag does not inspect this provider.)"""
    stack = Stack.of(network)
    provider = stack.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
    if provider is None:
        return
    role = cfn_resource(provider.node.find_child("Role"))
    handler = cfn_resource(provider.node.find_child("Handler"))
    handler.remove_resource_dependency(role)  # the handler's Role GetAtt already orders them (cfn-lint W3005)
    reason = ("CDK-provided handler run by CloudFormation once per deploy to revoke the default security group's "
              "rules; it takes no input from outside the stack and is not called at run time.")
    for check, why in (
        ("CKV_AWS_115", "concurrency is one call per deploy"),
        ("CKV_AWS_116", "CloudFormation waits for its answer and reports a failure; a DLQ would never be read"),
        ("CKV_AWS_117", "it calls the EC2 API only and needs no VPC"),
    ):
        skip_checkov(handler, check, f"{reason} {why[0].upper()}{why[1:]}.")
