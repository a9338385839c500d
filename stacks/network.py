"""Where the task runs: public subnets with no NAT gateway, or the subnets given in config."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.nag import acknowledge


class Network(Construct):
    """The VPC, the subnets the task is launched in, and its egress-only security group."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc_id: str | None, subnet_ids: tuple[str, ...]) -> None:
        super().__init__(scope, construct_id)
        if vpc_id is None:
            # Public subnets only: the task gets a public IP for egress, so no NAT gateway
            # (~$33 a month each) sits idle between runs.
            self.vpc: ec2.IVpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
                max_azs=2,
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
                ],
                # Nothing uses the default security group; restricting it would add a Lambda-backed
                # custom resource to the stack.
                restrict_default_security_group=False,
            )
            acknowledge(
                self.vpc.node.default_child,
                "VPC7",
                "The VPC only carries this job's outbound HTTPS: its one security group admits no inbound "
                "traffic and no other workload runs in it. Flow logs would add CloudWatch ingestion cost and an "
                "IAM role for no traffic an operator acts on; enable them, or deploy into an existing VPC that has "
                "them (vpc_id, subnet_ids), if your policy requires it.",
            )
            self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
            self.subnet_ids = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PUBLIC).subnet_ids
        else:
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

        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="ETL task: no ingress; egress HTTPS only (BigQuery, ECR, CloudWatch Logs, Secrets Manager)",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to Google and AWS APIs")
