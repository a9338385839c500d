"""The google_auth keys: key (a secret) or workload_identity (a provider, optionally a service account)."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError
from tests.support import build_config

PROVIDER = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/etl-pool/providers/aws-etl"
SERVICE_ACCOUNT = "etl-job@my-gcp-project.iam.gserviceaccount.com"


def test_default_is_the_key_in_a_secret() -> None:
    config = build_config()
    assert (config.google_auth, config.workload_identity_provider, config.google_service_account) == ("key", None, None)


@pytest.mark.parametrize(
    "provider",
    [PROVIDER, "https:" + PROVIDER, PROVIDER.removeprefix("//iam.googleapis.com/")],
    ids=["full-name", "with-https", "as-gcloud-describe-prints-it"],
)
def test_workload_identity_takes_the_provider_in_the_forms_gcp_shows_it(provider: str) -> None:
    config = build_config(google_auth="workload_identity", workload_identity_provider=provider,
                          google_service_account=SERVICE_ACCOUNT)
    assert (config.workload_identity_provider, config.google_service_account) == (PROVIDER, SERVICE_ACCOUNT)
    assert build_config(google_auth="workload_identity", workload_identity_provider=provider).google_service_account is None


INVALID = [
    ({"google_auth": "oidc"}, "google_auth", "key, workload_identity"),
    ({"google_auth": "workload_identity"}, "workload_identity_provider", "gcloud iam workload-identity-pools providers describe"),
    ({"google_auth": "workload_identity", "workload_identity_provider": PROVIDER.replace("123456789012", "my-gcp-project")},
     "workload_identity_provider", "gcloud projects describe PROJECT_ID --format='value(projectNumber)'"),
    ({"google_auth": "workload_identity", "workload_identity_provider": "etl-pool/aws-etl"},
     "workload_identity_provider", "IAM & Admin > Workload Identity Federation"),
    ({"google_auth": "workload_identity", "workload_identity_provider": PROVIDER, "google_service_account": "etl-job"},
     "google_service_account", "gcloud iam service-accounts list --format='value(email)'"),
    ({"google_auth": "workload_identity", "workload_identity_provider": PROVIDER, "google_credentials_secret": "etl/key"},
     "google_auth", "workload_identity uses no secret"),
    ({"google_auth": "workload_identity", "workload_identity_provider": PROVIDER, "secret_kms_key": "true"},
     "google_auth", "workload_identity uses no secret"),
    ({"workload_identity_provider": PROVIDER}, "google_auth", "are for google_auth=workload_identity"),
    ({"google_service_account": SERVICE_ACCOUNT}, "google_auth", "are for google_auth=workload_identity"),
]


@pytest.mark.parametrize(("overrides", "named", "hint"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_google_auth_settings_name_the_key_and_where_to_find_the_value(overrides, named, hint) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(**overrides)
    message = str(error.value)
    assert f"'{named}'" in message and hint in message and "\n" not in message
