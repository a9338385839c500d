"""Accepting an audit finding on one construct, with the reason an auditor reads: cdk-nag and checkov."""

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept finding ``rule`` (e.g. ``IAM5[Resource::*]``) on ``construct`` only, for ``reason``."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))


def cfn_resource(construct: IConstruct) -> CfnResource:
    """The CloudFormation resource of a construct: itself if it is one, else its default child."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to acknowledge or skip a finding on")
    return resource


def skip_checkov(construct: IConstruct, check_id: str, reason: str) -> None:
    """Skip checkov check ``check_id`` (e.g. ``CKV_AWS_158``) on this construct's resource only, for ``reason``.

    Written into the resource's template Metadata, where checkov reads it and reports it as skipped.
    """
    resource = cfn_resource(construct)
    metadata = resource.get_metadata("checkov") or {}
    skips = [*metadata.get("skip", []), {"id": check_id, "comment": reason}]
    resource.add_metadata("checkov", {**metadata, "skip": skips})
