"""google_auth=workload_identity: no secret, the credential configuration as plain config, the gcloud set-up."""

from __future__ import annotations

import json
import re

import pytest

from dev.audit_configurations import CONFIGURATIONS
from dev.key_readers import credential_lives
from etl_job import contract, workload_identity
from stacks import limits
from tests.support import synth

WIF = CONFIGURATIONS["dev-wif"]
ACCOUNT, REGION, PARTITION = "123456789012", "eu-west-1", "aws"


@pytest.fixture(scope="module")
def template() -> dict:
    return synth(**WIF).to_json()


def container(template: dict) -> dict:
    (definition,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    (only,) = definition["ContainerDefinitions"]
    return only


def task_role_id(template: dict) -> str:
    (definition,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    return definition["TaskRoleArn"]["Fn::GetAtt"][0]


def render(value: object, template: dict) -> str:
    """An output's value as it reads after deploy (account, region, partition and the role's name filled in)."""
    role_name = f"EtlPipeline-dev-{REGION}"
    refs = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION, task_role_id(template): role_name}
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return refs[value["Ref"]]
    if "Fn::GetAtt" in value and value["Fn::GetAtt"] == [task_role_id(template), "Arn"]:
        return f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    separator, parts = value["Fn::Join"]
    return separator.join(render(part, template) for part in parts)


def test_no_secret_and_no_secret_permission(template: dict) -> None:
    assert not [r for r in template["Resources"].values() if r["Type"].startswith("AWS::SecretsManager::")]
    policies = json.dumps([r for r in template["Resources"].values() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role")])
    assert "secretsmanager:" not in policies
    assert "Secrets" not in container(template)
    assert "SecretArn" not in template["Outputs"]


def test_environment_is_the_contract_for_the_mode_and_the_job_accepts_the_configuration(template: dict) -> None:
    environment = {e["Name"]: e["Value"] for e in container(template)["Environment"]}
    assert set(environment) == set(contract.STACK_SET) | set(contract.AUTH_PLAIN["workload_identity"])
    config = json.loads(environment[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG])
    assert config == contract.workload_identity_config(provider=WIF["workload_identity_provider"],
                                                       service_account=WIF["google_service_account"])
    assert workload_identity._parse(environment[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG]) == config
    assert config["subject_token_type"] == "urn:ietf:params:aws:token-type:aws4_request"
    assert config["service_account_impersonation_url"] == (
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        "etl-job@my-gcp-project.iam.gserviceaccount.com:generateAccessToken")


def test_key_mode_still_injects_the_key_and_sets_no_federation_config() -> None:
    key = synth().to_json()
    environment = {e["Name"] for e in container(key)["Environment"]}
    assert contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG not in environment
    assert [s["Name"] for s in container(key)["Secrets"]] == [contract.GOOGLE_CREDENTIALS_JSON]
    assert "RoleName" not in key["Resources"][task_role_id(key)]["Properties"]


def test_the_provider_condition_admits_this_task_role_only(template: dict) -> None:
    command = render(template["Outputs"]["WorkloadIdentityProviderCommand"]["Value"], template)
    assert command.startswith("gcloud iam workload-identity-pools providers create-aws aws-etl --project=123456789012 "
                              "--location=global --workload-identity-pool=etl-pool --account-id=123456789012 ")
    (condition,) = re.findall(r"--attribute-condition=\"attribute\.aws_role=='([^']+)'\"", command)
    assert "attribute.aws_role=assertion.arn.contains('assumed-role')" in command

    def google_sees(role: str, account: str = ACCOUNT) -> str:  # Google's default aws_role mapping
        return f"arn:aws:sts::{account}:assumed-role/{role}/{'a' * limits.ECS_ROLE_SESSION_NAME_CHARS}".rsplit("/", 1)[0]

    assert google_sees(f"EtlPipeline-dev-{REGION}") == condition
    assert google_sees("SomeOtherRole") != condition and google_sees(f"EtlPipeline-dev-{REGION}", "999999999999") != condition
    assert render(template["Outputs"]["TaskRoleArn"]["Value"], template).endswith(f":role/EtlPipeline-dev-{REGION}")


def test_pool_and_binding_commands(template: dict) -> None:
    outputs = {k: render(v["Value"], template) for k, v in template["Outputs"].items() if k.startswith("WorkloadIdentity")}
    assert outputs["WorkloadIdentityPoolCommand"].startswith(
        "gcloud iam workload-identity-pools create etl-pool --project=123456789012 --location=global")
    principal = ("principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
                 f"etl-pool/attribute.aws_role/arn:aws:sts::{ACCOUNT}:assumed-role/EtlPipeline-dev-{REGION}")
    assert outputs["WorkloadIdentityPrincipal"] == principal
    assert outputs["WorkloadIdentityBindingCommand"] == (
        "gcloud iam service-accounts add-iam-policy-binding etl-job@my-gcp-project.iam.gserviceaccount.com "
        f"--role=roles/iam.workloadIdentityUser --member='{principal}'")
    direct = synth(**{**WIF, "google_service_account": None}).to_json()
    binding = render(direct["Outputs"]["WorkloadIdentityBindingCommand"]["Value"], direct)
    # The job runs query jobs and, on the Python path, Storage Read sessions (bigquery.readsessions.create).
    assert "--role=roles/bigquery.jobUser" in binding and "--role=roles/bigquery.readSessionUser" in binding


def test_the_longest_task_role_arn_fits_google_subject() -> None:
    name = limits.TASK_ROLE_NAME.format(prefix=limits.STACK_NAME_PREFIX, stage="x" * 20, region="ap-southeast-5")
    arn = f"arn:aws-us-gov:sts::{ACCOUNT}:assumed-role/{name}/{'0' * limits.ECS_ROLE_SESSION_NAME_CHARS}"
    assert len(arn.encode()) <= limits.GOOGLE_SUBJECT_MAX_BYTES, arn


def test_audit_report_says_where_each_credential_lives_and_for_how_long(template: dict) -> None:
    names = {logical_id: logical_id for logical_id in template["Resources"]}
    keyless = "\n".join(credential_lives(template, names))
    assert "no Google key exists" in keyless and "1 hour" in keyless and "ECS container endpoint" in keyless
    key = synth().to_json()
    with_key = "\n".join(credential_lives(key, {logical_id: logical_id for logical_id in key["Resources"]}))
    assert "lives until it is deleted in GCP" in with_key
