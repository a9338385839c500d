"""Unit tests for credential resolution: every way it can go wrong names the variable and the fix."""

import json

import pytest
from google.auth.credentials import AnonymousCredentials

from etl_job import credentials
from etl_job.errors import JobError


def test_local_bigquery_uses_anonymous_credentials_and_its_endpoint():
    auth = credentials.resolve({"BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9050/", "GOOGLE_CREDENTIALS_JSON": "x"})
    assert isinstance(auth.credentials, AnonymousCredentials)
    assert auth.endpoint == "http://127.0.0.1:9050"


@pytest.mark.parametrize("url", ["127.0.0.1:9050", "localhost", "ftp://host:1", "http://:9050", "http://h:port"])
def test_local_bigquery_url_needs_a_scheme_and_host(url):
    with pytest.raises(JobError, match="BIGQUERY_EMULATOR_HOST"):
        credentials.resolve({"BIGQUERY_EMULATOR_HOST": url})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"placeholder": "put the key here"}', "still holds the stack's placeholder"),
        ("", "is empty"),
        ("{not json", "is not valid JSON"),
        ('["a"]', "is not a JSON object"),
        ('{"type": "authorized_user"}', "has a 'type' field of 'authorized_user'"),
        (json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "nonsense, not a PEM key"}),
         "is not a usable service_account key"),
    ],
)
def test_unusable_credentials_json_says_how_to_put_the_key(value, message):
    with pytest.raises(JobError) as error:
        credentials.resolve({"GOOGLE_CREDENTIALS_JSON": value})
    assert f"GOOGLE_CREDENTIALS_JSON {message}" in str(error.value)
    assert "aws secretsmanager put-secret-value --secret-id" in str(error.value)
    assert "nonsense" not in str(error.value)  # never echo key material


def test_no_credentials_at_all_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default login here
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(JobError, match="no Google credentials: set GOOGLE_CREDENTIALS_JSON"):
        credentials.resolve({})
