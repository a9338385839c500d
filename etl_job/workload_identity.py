"""Google credentials without a key: Workload Identity Federation from the task's AWS role.

google-auth's AWS credentials sign an STS GetCallerIdentity request with AWS credentials and
exchange it at Google's STS for a Google token (then, optionally, for a service account's token).
Its built-in source reads AWS credentials only from environment variables or the EC2 metadata
server; a Fargate task has neither, its role's credentials come from the ECS container endpoint.
So the credentials here come from a supplier backed by the AWS SDK's own chain, which reads that
endpoint and re-reads the rotating credentials before they expire.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from google.auth import aws, exceptions

from etl_job import contract
from etl_job.credentials import parse_json_text
from etl_job.errors import CONNECTIVITY, JobError, first_line

NAME = contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG
_PROVIDER = re.compile(contract.WIF_PROVIDER_PATTERN)
_IMPERSONATION_PATH = re.compile(r"/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):generateAccessToken")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_FIX_CONFIG = "set google_auth=workload_identity and workload_identity_provider in cdk.json and redeploy"
_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")


class AwsCredentialsMissing(exceptions.RefreshError):
    """The AWS SDK found no credentials, or could not fetch them (a RefreshError, as google-auth expects)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]  # google-auth's GoogleAuthError.__init__ is unannotated


def credentials(text: str, env: Mapping[str, str], scopes: tuple[str, ...]) -> aws.Credentials:
    """google-auth AWS external-account credentials for the configuration ``text``, refreshed once to fail fast."""
    from google.auth.transport.requests import Request

    info = _parse(text)
    region = next((env[name].strip() for name in _REGION_VARS if env.get(name, "").strip()), "")
    if not region:
        raise JobError(
            "AWS_REGION is not set: Workload Identity Federation signs for the task's region; ECS sets it on "
            "Fargate, elsewhere set AWS_REGION (e.g. eu-west-1)"
        )
    creds = aws.Credentials(
        audience=info["audience"],
        subject_token_type=info["subject_token_type"],
        token_url=info["token_url"],
        service_account_impersonation_url=info.get("service_account_impersonation_url"),
        aws_security_credentials_supplier=AwsSdkSupplier(region),
        scopes=list(scopes),
    )
    try:
        creds.refresh(Request())
    except (exceptions.TransportError, OSError) as exc:  # no answer (google-auth wraps requests' errors)
        raise JobError(f"Workload Identity Federation could not reach Google ({first_line(exc)}): "
                       f"{CONNECTIVITY.format(what=urlsplit(info['token_url']).hostname)}") from None
    except exceptions.GoogleAuthError as exc:
        raise JobError(describe_error(exc) or f"Workload Identity Federation failed: {first_line(exc)}") from None
    return creds


def description(text: str) -> str:
    """What the credentials are, for the start-up log line (the configuration holds no secret)."""
    info = json.loads(text)
    target = info.get("service_account_impersonation_url")
    match = _IMPERSONATION_PATH.search(urlsplit(target).path) if target else None  # _parse checked its shape
    who = match.group("email") if match else "the federated identity"
    return f"{NAME} (workload identity federation: {info['audience']} as {who})"


class AwsSdkSupplier(aws.AwsSecurityCredentialsSupplier):
    """AWS credentials from the AWS SDK's chain (env, ECS container endpoint, profile, EC2), region from the task."""

    def __init__(self, region: str) -> None:
        self._region = region
        self._lock = threading.Lock()
        self._credentials: Any = None  # botocore's (untyped); refreshable ones re-read their source before they expire

    def get_aws_region(self, context: object, request: object) -> str:
        return self._region

    def get_aws_security_credentials(self, context: object, request: object) -> aws.AwsSecurityCredentials:
        from botocore.exceptions import BotoCoreError

        try:
            with self._lock:
                if self._credentials is None:
                    import boto3

                    self._credentials = boto3.session.Session().get_credentials()
            if self._credentials is None:
                raise AwsCredentialsMissing("the AWS SDK found no credentials")
            # Refreshes from the container endpoint when the current ones come close to expiring.
            frozen = self._credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            raise AwsCredentialsMissing(first_line(exc)) from None
        return aws.AwsSecurityCredentials(frozen.access_key, frozen.secret_key, frozen.token)


def describe_error(exc: BaseException) -> str | None:
    """One line naming why Workload Identity Federation failed and the fix; None if ``exc`` is not about it."""
    if isinstance(exc, AwsCredentialsMissing):
        return (
            f"no AWS credentials for Workload Identity Federation ({exc}): on ECS the task needs a task role "
            "(the stack gives it one); locally set AWS_CONTAINER_CREDENTIALS_FULL_URI or AWS_PROFILE"
        )
    text = first_line(exc)
    if isinstance(exc, exceptions.OAuthError):
        if "Error code invalid_target" in text:
            return (f"Google STS rejected the audience ({text}): the workload identity provider in {NAME} does not "
                    "exist or is disabled; compare workload_identity_provider in cdk.json with `gcloud iam "
                    "workload-identity-pools providers describe PROVIDER --workload-identity-pool=POOL "
                    "--location=global --format='value(name)'`")
        if "Error code unauthorized_client" in text:
            return (f"Google STS rejected this task's AWS role by the provider's attribute condition ({text}): "
                    "run the stack output WorkloadIdentityProviderCommand (or update-aws with its condition)")
        if "Error code invalid_grant" in text:
            return (f"Google STS rejected the signed AWS request ({text}): the task role's credentials are invalid "
                    "or expired, or the task's clock is off; check the provider's AWS account id and the task role")
        return (f"Google STS refused the token exchange ({text}): compare the provider's attribute mapping and "
                "settings with the stack output WorkloadIdentityProviderCommand")
    if isinstance(exc, exceptions.RefreshError) and exc.args and exc.args[0] == _IMPERSONATION_FAILED:
        body = exc.args[1] if len(exc.args) > 1 else ""
        return (f"impersonating the service account was denied ({_google_message(body)}): grant the task's "
                "principal roles/iam.workloadIdentityUser on it with the stack output WorkloadIdentityBindingCommand")
    return None


_IMPERSONATION_FAILED = "Unable to acquire impersonated credentials"


def _google_message(body: object) -> str:
    try:
        error = json.loads(body)["error"]  # type: ignore[arg-type]  # not text: the TypeError is handled below
        return f"{error.get('code')} {error.get('status')}: {error.get('message')}"[:300]
    except (TypeError, ValueError, KeyError, AttributeError):
        return str(body).splitlines()[0][:300] if str(body) else "no detail"


def _parse(text: str) -> dict[str, Any]:
    info = parse_json_text(NAME, text, _FIX_CONFIG)
    if not isinstance(info, dict) or info.get("type") != "external_account":
        raise JobError(f"{NAME} is not an external_account credential configuration: {_FIX_CONFIG}")
    problems = []
    if not isinstance(info.get("audience"), str) or not _PROVIDER.fullmatch(info["audience"]):
        problems.append(f"audience {info.get('audience')!r} is not a provider's full resource name "
                        "(//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/ID)")
    if info.get("subject_token_type") != contract.AWS_SUBJECT_TOKEN_TYPE:
        problems.append(f"subject_token_type must be {contract.AWS_SUBJECT_TOKEN_TYPE}")
    source = info.get("credential_source")
    if not isinstance(source, dict) or source.get("environment_id") != "aws1":
        problems.append("credential_source.environment_id must be aws1 (AWS)")
    if not _google_or_loopback(info.get("token_url")):
        problems.append(f"token_url {info.get('token_url')!r} is not an https URL of Google's STS")
    target = info.get("service_account_impersonation_url")
    if target is not None and not (_google_or_loopback(target) and _IMPERSONATION_PATH.fullmatch(urlsplit(target).path)):
        problems.append(f"service_account_impersonation_url {target!r} is not an IAM Credentials generateAccessToken URL")
    if problems:
        raise JobError(f"{NAME} is not usable: {'; '.join(problems)}; {_FIX_CONFIG}")
    return info


def _google_or_loopback(url: object) -> bool:
    """Google's https endpoints, or a plain-http stand-in on this machine (tests, local development)."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    host = parts.hostname or ""
    return (parts.scheme == "https" and host.endswith(".googleapis.com")) or (
        parts.scheme == "http" and host in _LOOPBACK
    )
