"""Acknowledging a cdk-nag AwsSolutions finding: on one construct, with the reason an auditor reads."""

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept finding ``rule`` (e.g. ``IAM5[Resource::*]``) on ``construct`` only, for ``reason``."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))
