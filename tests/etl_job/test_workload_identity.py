"""Workload Identity Federation from the task role, end to end against local stand-ins (dev/local_wif.py).

The real job process reads rotating task-role credentials from a local ECS credentials endpoint
through the AWS SDK, signs GetCallerIdentity with them, exchanges that at a local Google STS (which
verifies the SigV4 signature with the secret the endpoint handed out, the audience, the date and the
key's expiry), impersonates a service account at a local IAM Credentials, and calls the local
BigQuery through a proxy that accepts only the tokens the stand-in issued.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from google.auth import aws
from google.auth.transport.requests import Request

from dev.local_wif import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, AwsError, BearerProxy, LocalAws, LocalGoogle
from etl_job import contract, workload_identity
from etl_job.errors import JobError
from tests.support import CLOSED_URL, DEMO_SQL, SLOW, assert_no_traceback, business_columns, expected_rows, log_lines

REGION = "eu-west-1"
PROVIDER = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/etl-pool/providers/aws-etl"


@pytest.fixture
def stand_ins(local_bigquery):
    """Make a LocalAws, a LocalGoogle trusting it and a BearerProxy in front of the local BigQuery."""
    made = []

    def make(aws_options: dict | None = None, **google_options):
        local_aws = LocalAws(**(aws_options or {}))
        google = LocalGoogle(aws=local_aws, **google_options)
        proxy = BearerProxy(local_bigquery.url, google)
        made.extend([proxy, google, local_aws])
        return local_aws, google, proxy

    yield make
    for server in made:
        server.close()


def wif_env(local_aws: LocalAws | None, google: LocalGoogle, proxy: BearerProxy, tmp_path, **config) -> dict:
    """The job's environment in WIF mode: no emulator shortcut, real credentials against the proxy."""
    env = {
        contract.BIGQUERY_EMULATOR_HOST: None,
        contract.BIGQUERY_ENDPOINT: proxy.url,
        contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG: json.dumps(google.config(**config)),
        "AWS_REGION": REGION,
        # The AWS SDK's chain must find only the container endpoint: no files, no EC2 metadata.
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if local_aws is not None:
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = local_aws.url
    return env


def test_job_loads_exactly_with_federated_credentials_and_bigquery_sees_only_issued_tokens(job, stand_ins, tmp_path):
    local_aws, google, proxy = stand_ins()
    job.seed(120)

    done = job.run(**wif_env(local_aws, google, proxy, tmp_path))

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(120)
    assert proxy.seen and not proxy.refused
    assert {google.tokens[t].principal for t in proxy.seen} == {f"serviceAccount:{google.service_account}"}
    assert [status for status, _ in google.exchanges] == [200]
    assert len(local_aws.verified) == 1
    credentials_line = next(line for line in log_lines(done.stderr) if line["message"] == "using Google credentials")
    assert google.provider in credentials_line["credentials"] and google.service_account in credentials_line["credentials"]


def test_without_impersonation_bigquery_gets_the_federated_token(job, stand_ins, tmp_path):
    local_aws, google, proxy = stand_ins(service_account=None)
    job.seed(30)

    done = job.run(**wif_env(local_aws, google, proxy, tmp_path))

    assert done.returncode == 0, done.stderr
    assert job.count() == 30
    assert {google.tokens[t].principal for t in proxy.seen} == {google.principal_set}


def test_the_sql_path_needs_no_storage_endpoint_beside_a_local_endpoint(job, stand_ins, tmp_path):
    """It reads no rows, so ETL_BIGQUERY_ENDPOINT alone keeps every call it makes local."""
    local_aws, google, proxy = stand_ins()
    job.seed(30)

    done = job.run(**wif_env(local_aws, google, proxy, tmp_path), BIGQUERY_STORAGE_EMULATOR_HOST=None,
                   ETL_TRANSFORM_SQL=DEMO_SQL)

    assert done.returncode == 0, log_lines(done.stderr)[-1]
    assert job.count() == 30 and proxy.seen and not proxy.refused


def test_rotating_credentials_and_expiring_tokens_keep_a_long_run_going(job, stand_ins, tmp_path):
    # Every AWS key and Google token works for 1.5 s (see dev/local_wif.py on compressed lifetimes);
    # the run takes several seconds, so it must re-read the endpoint and re-exchange on the way. The
    # Python path calls BigQuery at the start (extract) and at the end (one Parquet load and INSERT of
    # the gathered batches): the end comes after both have expired, with fresh ones or not at all.
    local_aws, google, proxy = stand_ins({"lifetime_seconds": 1.5}, lifetime_seconds=1.5)
    job.seed(240)

    done = job.run(**wif_env(local_aws, google, proxy, tmp_path), ETL_BATCH_SIZE="20", ETL_CONCURRENCY="1",
                   ETL_TRANSFORM=SLOW)

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(240)
    assert not proxy.refused
    assert len(set(local_aws.verified)) >= 2, "the AWS credentials were not re-read from the endpoint"
    assert len(set(proxy.seen)) >= 2, "the Google token was not refreshed"
    assert all(status == 200 for status, _ in google.exchanges)


@pytest.mark.parametrize(
    ("aws_options", "google_options", "config", "expected"),
    [
        pytest.param({}, {}, {"audience": "//iam.googleapis.com/projects/123456789012/locations/global/"
                              "workloadIdentityPools/etl-pool/providers/other"},
                     "Google STS rejected the audience", id="wrong-audience"),
        pytest.param({"role_name": "SomeOtherRole"}, {}, {}, "rejected this task's AWS role by the provider's "
                     "attribute condition", id="condition"),
        pytest.param({"clock_offset_seconds": 20 * 60}, {}, {}, "Signature expired", id="expired-subject-token"),
        pytest.param({"hand_out_wrong_secret": True}, {}, {}, "SignatureDoesNotMatch", id="bad-signature"),
        pytest.param({}, {"impersonators": ()}, {}, "impersonating the service account was denied", id="impersonation"),
        pytest.param(None, {}, {}, "no AWS credentials for Workload Identity Federation", id="no-task-role"),
        pytest.param({"role_name": "R" * 64}, {}, {}, "Google STS refused the token exchange (Error code invalid_request: "
                     "The size of mapped attribute google.subject exceeds", id="subject-too-long"),
        pytest.param({}, {}, {"token_url": f"{CLOSED_URL}/v1/token"},
                     "Workload Identity Federation could not reach Google (", id="sts-out-of-reach"),
    ],
)
def test_federation_failures_are_one_line_and_exit_1(job, stand_ins, tmp_path, aws_options, google_options, config,
                                                     expected):
    local_aws, google, proxy = stand_ins(aws_options or {}, **google_options)
    job.seed(10)

    done = job.run(**wif_env(local_aws if aws_options is not None else None, google, proxy, tmp_path, **config))

    assert done.returncode == 1
    assert_no_traceback(done)
    last = log_lines(done.stderr)[-1]
    assert expected in last["message"] and "\n" not in last["message"]
    assert last["exit_code"] == 1
    assert proxy.seen == []  # it stopped before BigQuery
    if aws_options is not None:
        for key in local_aws.keys.values():
            assert key.secret not in done.stderr and key.token not in done.stderr


# --- The stand-ins check what Google and AWS check -----------------------------------------------------------


class _Static(aws.AwsSecurityCredentialsSupplier):
    def __init__(self, local_aws: LocalAws) -> None:
        issued = local_aws._issue()
        self.credentials = aws.AwsSecurityCredentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["Token"])

    def get_aws_region(self, context, request):
        return REGION

    def get_aws_security_credentials(self, context, request):
        return self.credentials


def _subject_token(local_aws: LocalAws, google: LocalGoogle) -> dict:
    credentials = aws.Credentials(audience=google.provider, subject_token_type=contract.AWS_SUBJECT_TOKEN_TYPE,
                                  aws_security_credentials_supplier=_Static(local_aws))
    return json.loads(urllib.parse.unquote(credentials.retrieve_subject_token(Request())))


def _without(signed: dict, name: str) -> dict:
    return {**signed, "headers": [h for h in signed["headers"] if h["key"].lower() != name]}


def _header(signed: dict, name: str) -> str:
    return next(h["value"] for h in signed["headers"] if h["key"].lower() == name)


def _flip_last(value: str) -> str:
    return value[:-1] + ("1" if value[-1] == "0" else "0")


def _replace(signed: dict, name: str, value: str) -> dict:
    return {**signed, "headers": [{**h, "value": value} if h["key"].lower() == name else h for h in signed["headers"]]}


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda s: s, None),
        (lambda s: _without(s, "authorization"), "MissingAuthenticationToken"),
        (lambda s: _replace(s, "x-goog-cloud-target-resource", "//iam.googleapis.com/projects/1/locations/global/"
                            "workloadIdentityPools/etl-pool/providers/aws-etl"), "does not match the audience"),
        (lambda s: _replace(s, "x-amz-date", "20200101T000000Z"), "Signature expired"),
        (lambda s: {**s, "url": s["url"].replace("Version=2011-06-15", "Version=2011-06-15&x=1")}, "InvalidAction"),
        (lambda s: _replace(s, "x-amz-security-token", "forged"), "InvalidClientTokenId"),
        (lambda s: _replace(s, "authorization", _flip_last(_header(s, "authorization"))), "SignatureDoesNotMatch"),
    ],
    ids=["valid", "unsigned", "other-audience-header", "old-date", "other-url", "forged-session-token", "tampered"],
)
def test_local_sts_verifies_the_subject_token_like_google_and_aws(stand_ins, tamper, expected):
    local_aws, google, _ = stand_ins()
    signed = tamper(_subject_token(local_aws, google))
    status, answer = google._exchange({
        "grant_type": [TOKEN_EXCHANGE], "requested_token_type": [ACCESS_TOKEN_TYPE],
        "audience": [google.provider], "subject_token_type": [contract.AWS_SUBJECT_TOKEN_TYPE],
        "subject_token": [urllib.parse.quote(json.dumps(signed))],
    })
    if expected is None:
        assert status == 200 and google.valid(answer["access_token"], for_bigquery=False)
    else:
        assert status == 400 and expected in answer["error_description"], answer


def test_local_sts_refuses_a_key_past_its_lifetime(stand_ins):
    local_aws, google, _ = stand_ins({"lifetime_seconds": -5})
    with pytest.raises(AwsError, match="ExpiredToken"):
        signed = _subject_token(local_aws, google)
        local_aws.get_caller_identity(signed["url"], signed["method"],
                                      {h["key"].lower(): h["value"] for h in signed["headers"]})


# --- The job's validation of the configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audience": "projects/1/locations/global/workloadIdentityPools/p/providers/x"}, "is not a provider's full"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}, "subject_token_type must be"),
        ({"token_url": "https://attacker.example/v1/token"}, "token_url"),
        ({"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x"},
         "service_account_impersonation_url"),
        ({"credential_source": {"file": "/token"}}, "environment_id must be aws1"),
        ({"type": "service_account"}, "is not an external_account credential configuration"),
    ],
)
def test_unusable_configuration_names_the_field_and_the_fix(change, message):
    config = {**contract.workload_identity_config(provider=PROVIDER,
                                                  service_account="etl@p-123456.iam.gserviceaccount.com"), **change}
    with pytest.raises(JobError) as error:
        workload_identity.credentials(json.dumps(config), {"AWS_REGION": REGION}, ())
    assert message in str(error.value) and "google_auth=workload_identity" in str(error.value)


def test_the_configuration_the_stack_writes_is_one_the_job_accepts():
    for service_account in (None, "etl-job@my-project.iam.gserviceaccount.com"):
        config = contract.workload_identity_config(provider=PROVIDER,
                                                   service_account=service_account)
        assert workload_identity._parse(json.dumps(config)) == config


def test_missing_region_is_a_clear_error():
    config = contract.workload_identity_config(provider=PROVIDER, service_account=None)
    with pytest.raises(JobError, match="AWS_REGION is not set"):
        workload_identity.credentials(json.dumps(config), {}, ())


def test_a_federation_failure_mid_run_is_described_as_one():
    from google.auth import exceptions

    from etl_job import bigquery_io

    rejected = exceptions.OAuthError("Error code unauthorized_client: The given credential is rejected by the "
                                     "attribute condition.", '{"error": "unauthorized_client"}')
    assert bigquery_io.describe_error(rejected).startswith("Google STS rejected this task's AWS role")
    missing = workload_identity.AwsCredentialsMissing("the AWS SDK found no credentials")
    assert bigquery_io.describe_error(missing).startswith("no AWS credentials for Workload Identity Federation")
