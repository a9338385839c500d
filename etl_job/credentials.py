"""Where the job's Google credentials come from: the one place they are resolved."""

from __future__ import annotations

import ctypes
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etl_job import contract
from etl_job.errors import JobError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# service_account: a key (what the stack's secret holds today); external_account: a Workload Identity
# Federation configuration for AWS, the planned replacement for the key (it holds no secret).
ACCEPTED_TYPES = ("service_account", "external_account")
# Other credential types Google's tools write: safe to name, as they are fixed words.
KNOWN_OTHER_TYPES = ("authorized_user", "impersonated_service_account", "external_account_authorized_user",
                     "gdch_service_account")
STRING_FIELDS = ("client_email", "private_key", "private_key_id", "client_id", "token_uri", "project_id",
                 "audience", "subject_token_type", "service_account_impersonation_url")
REQUIRED_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "external_account": (),
}
CHECK = {
    "service_account": "check that private_key is the PEM text of the key file",
    "external_account": "check the file from `gcloud iam workload-identity-pools create-cred-config`",
}
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}")
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
    url = env.get(contract.BIGQUERY_ENDPOINT, "").strip()
    endpoint = _local_url(contract.BIGQUERY_ENDPOINT, url) if url else None
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
    # Nothing from the secret's text reaches a message or a log line: only field names and JSON types,
    # as any field may hold a pasted key.
    name = contract.GOOGLE_CREDENTIALS_JSON
    info = parse_json_text(name, text, PUT_SECRET_HINT)
    if not isinstance(info, dict):
        raise JobError(f"{name} is not a JSON object (it is {_json_type(info)}): {PUT_SECRET_HINT}")
    if "placeholder" in info:
        raise JobError(f"{name} still holds the stack's placeholder, not a key: {PUT_SECRET_HINT}")
    kind = info.get("type")
    if kind not in ACCEPTED_TYPES:
        shown = repr(kind) if kind in KNOWN_OTHER_TYPES else f"{_json_type(kind)}, not a known credential type"
        raise JobError(
            f"{name} has a 'type' field of {shown}; expected one of {', '.join(ACCEPTED_TYPES)}: "
            "create a key with `gcloud iam service-accounts keys create key.json --iam-account=...`, then "
            + PUT_SECRET_HINT
        )
    _check_field_types(info, kind)
    return _credentials(info, kind)


def parse_json_text(name: str, text: str, fix: str) -> object:
    """The JSON value of variable ``name``; a JobError naming it and ``fix`` if it is empty or not JSON (never the text)."""
    if not text.strip():
        raise JobError(f"{name} is empty: {fix}")
    try:
        return json.loads(text)
    except ValueError:
        raise JobError(f"{name} is not valid JSON: {fix}") from None


def _check_field_types(info: dict[str, Any], kind: str) -> None:
    name = contract.GOOGLE_CREDENTIALS_JSON
    wrong = [f"'{field}' is {_json_type(info[field])}" for field in STRING_FIELDS if field in info
             and not isinstance(info[field], str)]
    missing = [f"'{field}'" for field in REQUIRED_FIELDS[kind] if field not in info]
    if wrong or missing:
        problems = wrong + ([f"{', '.join(missing)} missing"] if missing else [])
        raise JobError(f"{name} is not a usable {kind} key ({'; '.join(problems)}; each must be a string): "
                       + PUT_SECRET_HINT)
    if kind == "service_account" and not _EMAIL.fullmatch(info["client_email"]):
        raise JobError(f"{name} is not a usable {kind} key ('client_email' is not an e-mail address): "
                       + PUT_SECRET_HINT)


def _credentials(info: dict[str, Any], kind: str) -> GoogleAuth:
    from google.auth.exceptions import GoogleAuthError

    name = contract.GOOGLE_CREDENTIALS_JSON
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        else:
            from google.auth import aws

            credentials = aws.Credentials.from_info(info, scopes=SCOPES)
    except (ValueError, TypeError, KeyError, GoogleAuthError) as exc:
        # The library's message can quote the key: name only the exception type.
        raise JobError(
            f"{name} is not a usable {kind} key (Google's library rejected it: {type(exc).__name__}; "
            f"{CHECK[kind]}): {PUT_SECRET_HINT}"
        ) from None
    who = info["client_email"] if kind == "service_account" else "Workload Identity Federation"
    return GoogleAuth(credentials, None, f"{name} ({kind}: {who})")


def _json_type(value: object) -> str:
    """The JSON type of a value, for messages that must not show the value."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), "a value")


def forget_secret_environment() -> None:
    """Remove ``GOOGLE_CREDENTIALS_JSON`` from this process once it is parsed, so that neither a transform,
    a child process nor a reader of /proc/PID/environ finds it there."""
    if os.environ.pop(contract.GOOGLE_CREDENTIALS_JSON, None) is not None:
        _blank_initial_environment(contract.GOOGLE_CREDENTIALS_JSON)


def _blank_initial_environment(name: str) -> None:
    # os.environ.pop unsets the variable, but Linux keeps the environment the process started with in its
    # memory and shows it in /proc/PID/environ (proc(5), env_start and env_end): overwrite that copy.
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # fields 50 and 51, counted from 1
    except (OSError, IndexError, ValueError):
        return  # not Linux: no such copy to read
    block = ctypes.string_at(start, end - start)
    prefix = name.encode() + b"="
    offset = 0 if block.startswith(prefix) else block.find(b"\0" + prefix) + 1
    if offset or block.startswith(prefix):
        stop = block.find(b"\0", offset)
        ctypes.memset(start + offset, 0, (stop if stop >= 0 else len(block)) - offset)


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
