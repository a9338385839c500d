"""Where the job's Google credentials come from: the one place they are resolved."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from etl_job import contract
from etl_job.errors import JobError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# service_account: a key (what the stack's secret holds today); external_account: a Workload Identity
# Federation configuration for AWS, the planned replacement for the key (it holds no secret).
ACCEPTED_TYPES = ("service_account", "external_account")
PUT_SECRET_HINT = (
    "put the service-account key into the stack's secret: aws secretsmanager put-secret-value "
    "--secret-id <secret ARN from the stack outputs> --secret-string file://key.json"
)


@dataclass(frozen=True)
class GoogleAuth:
    """Credentials for the BigQuery client, the API endpoint (None: Google's) and a loggable description."""

    credentials: object
    endpoint: str | None
    description: str


def resolve(env: Mapping[str, str]) -> GoogleAuth:
    """Pick credentials in this order: a local BigQuery, ``GOOGLE_WORKLOAD_IDENTITY_CONFIG``,
    ``GOOGLE_CREDENTIALS_JSON``, Application Default Credentials; ``ETL_BIGQUERY_ENDPOINT`` redirects the last three.
    """
    emulator = env.get(contract.BIGQUERY_EMULATOR_HOST, "").strip()
    if emulator:
        return _emulator(emulator)
    endpoint = env.get(contract.BIGQUERY_ENDPOINT, "").strip()
    endpoint = _local_url(contract.BIGQUERY_ENDPOINT, endpoint) if endpoint else None
    if contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG in env:
        auth = _workload_identity(env[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG], env)
    elif contract.GOOGLE_CREDENTIALS_JSON in env:
        auth = _from_json(env[contract.GOOGLE_CREDENTIALS_JSON])
    else:
        auth = _application_default()
    return GoogleAuth(auth.credentials, endpoint, auth.description) if endpoint else auth


def _local_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError(
            f"{name}={url!r} is not a URL: include the scheme, e.g. http://127.0.0.1:9050, or unset it to use "
            "Google BigQuery"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise JobError(f"{name}={url!r} has an invalid port") from None
    return url.rstrip("/")


def _emulator(url: str) -> GoogleAuth:
    from google.auth.credentials import AnonymousCredentials

    url = _local_url(contract.BIGQUERY_EMULATOR_HOST, url)
    return GoogleAuth(AnonymousCredentials(), url, f"local BigQuery at {url} (anonymous)")


def _workload_identity(text: str, env: Mapping[str, str]) -> GoogleAuth:
    from etl_job import workload_identity

    credentials = workload_identity.credentials(text, env, SCOPES)
    return GoogleAuth(credentials, None, workload_identity.description(text))


def _from_json(text: str) -> GoogleAuth:
    from google.auth.exceptions import GoogleAuthError

    name = contract.GOOGLE_CREDENTIALS_JSON
    if not text.strip():
        raise JobError(f"{name} is empty: {PUT_SECRET_HINT}")
    try:
        info = json.loads(text)
    except ValueError:
        raise JobError(f"{name} is not valid JSON: {PUT_SECRET_HINT}") from None
    if not isinstance(info, dict):
        raise JobError(f"{name} is not a JSON object: {PUT_SECRET_HINT}")
    if "placeholder" in info:
        raise JobError(f"{name} still holds the stack's placeholder, not a key: {PUT_SECRET_HINT}")
    if info.get("type") not in ACCEPTED_TYPES:
        raise JobError(
            f"{name} has type {info.get('type')!r}; expected one of {', '.join(ACCEPTED_TYPES)}: "
            "create a key with `gcloud iam service-accounts keys create key.json --iam-account=...`, then "
            + PUT_SECRET_HINT
        )
    try:
        if info["type"] == "service_account":
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        else:
            from google.auth import aws

            credentials = aws.Credentials.from_info(info, scopes=SCOPES)
    except (ValueError, GoogleAuthError) as exc:
        # The message can quote the key's fields, never the key itself: keep only its first line.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise JobError(f"{name} is not a usable {info['type']} key ({reason}): {PUT_SECRET_HINT}") from None
    who = info.get("client_email") or info.get("service_account_impersonation_url") or info["type"]
    return GoogleAuth(credentials, None, f"{name} ({info['type']}: {who})")


def _application_default() -> GoogleAuth:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise JobError(
            f"no Google credentials: set {contract.GOOGLE_CREDENTIALS_JSON} to a service-account key "
            "(on AWS the stack injects it from Secrets Manager), or run "
            "`gcloud auth application-default login` locally"
        ) from None
    return GoogleAuth(credentials, None, "Application Default Credentials")
