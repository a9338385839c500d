"""The GCP side of google_auth=workload_identity: the gcloud commands that make Google trust this task role.

Google's default attribute mapping for AWS providers turns the caller's assumed-role ARN
(arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION) into ``attribute.aws_role``
(arn:aws:sts::ACCOUNT:assumed-role/ROLE); the provider's condition admits only this stack's task role.
"""

from __future__ import annotations

import re

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from etl_job import contract

# Google's documented default mapping for AWS providers (gcloud: create-aws --attribute-mapping).
ATTRIBUTE_MAPPING = (
    "google.subject=assertion.arn,attribute.aws_role=assertion.arn.contains('assumed-role') ? "
    "assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + "
    "assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
)


def aws_role(task_role: iam.IRole) -> str:
    """The ``attribute.aws_role`` value Google maps this task role's sessions to."""
    stack = Stack.of(task_role)
    return f"arn:{stack.partition}:sts::{stack.account}:assumed-role/{task_role.role_name}"


def setup_commands(*, provider: str, service_account: str | None, task_role: iam.IRole,
                   stage: str) -> dict[str, tuple[str, str]]:
    """Stack outputs: output id -> (the gcloud command, what it does)."""
    parts = re.fullmatch(contract.WIF_PROVIDER_PATTERN, provider)
    if parts is None:  # stacks/config.py validated it before any construct is built
        raise ValueError(f"{provider!r} is not a workload identity provider's full resource name")
    number, pool, provider_id = parts["project_number"], parts["pool"], parts["provider"]
    role = aws_role(task_role)
    principal = (f"principalSet://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
                 f"{pool}/attribute.aws_role/{role}")
    commands = {
        "WorkloadIdentityPoolCommand": (
            f"gcloud iam workload-identity-pools create {pool} --project={number} --location=global "
            f"--display-name='ETL pipeline {stage}'",
            "Creates the workload identity pool (once; skip if it exists)",
        ),
        "WorkloadIdentityProviderCommand": (
            f"gcloud iam workload-identity-pools providers create-aws {provider_id} --project={number} "
            f"--location=global --workload-identity-pool={pool} --account-id={Stack.of(task_role).account} "
            f"--attribute-mapping=\"{ATTRIBUTE_MAPPING}\" --attribute-condition=\"attribute.aws_role=='{role}'\"",
            "Creates the AWS provider; its condition admits only this stack's task role",
        ),
        "WorkloadIdentityPrincipal": (principal, "The Google principal this stack's task runs as"),
    }
    if service_account:
        commands["WorkloadIdentityBindingCommand"] = (
            f"gcloud iam service-accounts add-iam-policy-binding {service_account} "
            f"--role=roles/iam.workloadIdentityUser --member='{principal}'",
            "Lets the task impersonate the service account (which holds the BigQuery roles)",
        )
    else:
        grant = "gcloud projects add-iam-policy-binding PROJECT_ID --role=roles/bigquery.{role} --member='{principal}'"
        commands["WorkloadIdentityBindingCommand"] = (
            " && ".join(grant.format(role=role, principal=principal) for role in ("jobUser", "readSessionUser")),
            "Lets the task run BigQuery jobs and Storage Read sessions; grant dataset roles to the same principal (README)",
        )
    return commands
