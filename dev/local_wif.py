"""Local stand-ins for Workload Identity Federation from AWS; loopback only, for tests and local trials.

- ``LocalAws``: the ECS container credentials endpoint (the AWS SDK reads it through
  ``AWS_CONTAINER_CREDENTIALS_FULL_URI``), handing out rotating task-role credentials, and the check
  AWS STS makes of a signed GetCallerIdentity request (SigV4 recomputed with botocore's signer,
  the session token, the 15-minute date window, the key's expiry).
- ``LocalGoogle``: Google's STS token exchange (``/v1/token``) and IAM Credentials
  ``generateAccessToken``: audience, the subject token's target-resource header, the AWS check,
  the attribute mapping and condition, the workloadIdentityUser binding; tokens it issues.
- ``BearerProxy``: in front of the local BigQuery, answers 401 unless the bearer token is one
  ``LocalGoogle`` issued for BigQuery and it is still valid; records every token it saw.

Lifetimes are compressed, not shortened: a client refreshes a margin before the expiry it is told
(botocore 15 minutes for rotating AWS credentials, google-auth 3 min 45 s for Google tokens), so the
stand-ins announce ``lifetime + that margin`` and accept a credential for ``lifetime`` seconds (plus
``GRACE_SECONDS`` for a request in flight). A run of a few seconds then sees the refreshes a real run
sees after an hour, and a client that did not refresh is refused as the real services would refuse it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dev.proxy import forward

AWS_ADVISORY_REFRESH_SECONDS = 15 * 60  # botocore refreshes temporary credentials this long before expiry
GOOGLE_REFRESH_SECONDS = 225  # google-auth's REFRESH_THRESHOLD: 3 min 45 s
GRACE_SECONDS = 2.0
SIGV4_WINDOW_SECONDS = 15 * 60  # AWS refuses a signature dated further than this from its clock
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
AWS_SUBJECT_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)
_STS_HOST = re.compile(r"sts(?:\.(?P<region>[a-z0-9-]+))?\.amazonaws\.com")


class AwsError(Exception):
    """What AWS STS answers to a bad signed request: an error code and its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class _Key:
    access_key_id: str
    secret: str
    token: str
    valid_until: float


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``handler`` on a free local port, on threads of its own; the server and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class LocalAws:
    """An ECS container credentials endpoint for one task role, and AWS STS's check of requests signed with it."""

    account: str = "123456789012"
    role_name: str = "EtlPipeline-test-task"
    task_id: str = "0123456789abcdef0123456789abcdef"  # ECS uses the task id as the role session name
    lifetime_seconds: float = 3600
    clock_offset_seconds: float = 0  # AWS's clock ahead of this machine's: ages every signature
    hand_out_wrong_secret: bool = False  # the endpoint serves a secret AWS does not hold for the key
    keys: dict[str, _Key] = field(default_factory=dict)  # every key handed out, by access key id
    verified: list[str] = field(default_factory=list)  # access key ids of the requests that passed, in order

    def __post_init__(self) -> None:
        outer = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.reply(200, outer._issue())

        self._server, base = serve(Handler)
        self.url = f"{base}/v2/credentials/{secrets.token_hex(8)}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.role_name}"

    @property
    def caller_arn(self) -> str:
        """The ARN STS GetCallerIdentity reports for the task: what Google sees."""
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role_name}/{self.task_id}"

    def now(self) -> float:
        return time.time() + self.clock_offset_seconds

    def _issue(self) -> dict:
        key = _Key("ASIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), secrets.token_urlsafe(60),
                   self.now() + self.lifetime_seconds)
        self.keys[key.access_key_id] = key
        return {
            "AccessKeyId": key.access_key_id,
            "SecretAccessKey": secrets.token_urlsafe(30) if self.hand_out_wrong_secret else key.secret,
            "Token": key.token,
            "Expiration": _iso(key.valid_until + AWS_ADVISORY_REFRESH_SECONDS),
            "RoleArn": self.role_arn,
        }

    def get_caller_identity(self, url: str, method: str, headers: dict[str, str]) -> str:
        """Verify a signed GetCallerIdentity request as AWS STS does; return the caller's ARN or raise AwsError."""
        parts = urlsplit(url)
        host = _STS_HOST.fullmatch(parts.hostname or "")
        if method != "POST" or parts.scheme != "https" or not host or parse_qs(parts.query) != {
            "Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]
        }:
            raise AwsError("InvalidAction", "not a POST of GetCallerIdentity to an sts.amazonaws.com endpoint")
        match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
        if not match:
            raise AwsError("MissingAuthenticationToken", "Request is missing Authentication Token")
        key = self.keys.get(match["key"])
        if key is None or headers.get("x-amz-security-token") != key.token:
            raise AwsError("InvalidClientTokenId", "The security token included in the request is invalid.")
        signed = match["signed"].split(";")
        if not {"host", "x-amz-date"} <= set(signed) or "x-amz-security-token" not in signed:
            raise AwsError("SignatureDoesNotMatch", "host, x-amz-date and x-amz-security-token must be signed")
        signed_at = dt.datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        if abs(self.now() - signed_at.timestamp()) > SIGV4_WINDOW_SECONDS:
            raise AwsError("SignatureDoesNotMatch", f"Signature expired: {headers['x-amz-date']} is now earlier than "
                           f"{_iso(self.now() - SIGV4_WINDOW_SECONDS)} ({_iso(self.now())} - 15 min.)")
        if self.now() > key.valid_until + GRACE_SECONDS:
            raise AwsError("ExpiredToken", "The security token included in the request is expired")
        region = host["region"] or "us-east-1"
        if match["region"] != region or match["service"] != "sts" or match["date"] != headers["x-amz-date"][:8]:
            raise AwsError("SignatureDoesNotMatch", f"Credential should be scoped to a valid region, not '{match['region']}'.")
        if not hmac.compare_digest(_sigv4(key, url, method, {h: headers.get(h, "") for h in signed}, region),
                                   match["signature"]):
            raise AwsError("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                           "you provided. Check your AWS Secret Access Key and signing method.")
        self.verified.append(key.access_key_id)
        return self.caller_arn

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _sigv4(key: _Key, url: str, method: str, signed_headers: dict[str, str], region: str) -> str:
    """The SigV4 signature of the request with the key's secret, computed by botocore's signer."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, headers=signed_headers, data=b"")
    request.context["timestamp"] = signed_headers["x-amz-date"]
    signer = SigV4Auth(Credentials(key.access_key_id, key.secret, key.token), "sts", region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


@dataclass
class _Token:
    principal: str
    valid_until: float
    for_bigquery: bool


@dataclass
class LocalGoogle:
    """Google STS and IAM Credentials for one workload identity provider that trusts one AWS role."""

    aws: LocalAws
    project_number: str = "123456789012"
    pool: str = "etl-pool"
    provider_id: str = "aws-etl"
    service_account: str | None = "etl-job@local-project.iam.gserviceaccount.com"
    lifetime_seconds: float = 3600
    trusted_role_name: str = "EtlPipeline-test-task"  # the provider's attribute condition admits only this role
    # Who holds roles/iam.workloadIdentityUser on the service account; default: the provider's condition.
    impersonators: tuple[str, ...] | None = None
    tokens: dict[str, _Token] = field(default_factory=dict)
    exchanges: list[tuple[int, dict]] = field(default_factory=list)  # every STS answer: status, payload
    _counter: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        outer = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.body()
                if self.path == "/v1/token":
                    status, payload = outer._exchange(parse_qs(body.decode()))
                elif match := re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken", self.path):
                    status, payload = outer._generate(match[1], self.headers.get("Authorization", ""), body)
                else:
                    status, payload = 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}
                self.reply(status, payload)

        self._server, self.url = serve(Handler)

    @property
    def provider(self) -> str:
        return (f"//iam.googleapis.com/projects/{self.project_number}/locations/global/workloadIdentityPools/"
                f"{self.pool}/providers/{self.provider_id}")

    @property
    def aws_role(self) -> str:
        """``attribute.aws_role`` under Google's default AWS mapping; the provider's condition admits only it."""
        return f"arn:aws:sts::{self.aws.account}:assumed-role/{self.trusted_role_name}"

    @property
    def principal_set(self) -> str:
        return (f"principalSet://iam.googleapis.com/projects/{self.project_number}/locations/global/"
                f"workloadIdentityPools/{self.pool}/attribute.aws_role/{self.aws_role}")

    def config(self, **overrides: object) -> dict[str, object]:
        """The credential configuration pointing at these stand-ins (the stack's shape, local URLs)."""
        config: dict[str, object] = {
            "type": "external_account",
            "audience": self.provider,
            "subject_token_type": AWS_SUBJECT_TOKEN_TYPE,
            "token_url": f"{self.url}/v1/token",
            "credential_source": {"environment_id": "aws1",
                                  "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"},
        }
        if self.service_account:
            config["service_account_impersonation_url"] = (
                f"{self.url}/v1/projects/-/serviceAccounts/{self.service_account}:generateAccessToken")
        config.update(overrides)
        return {k: v for k, v in config.items() if v is not None}

    def _token(self, prefix: str, principal: str, for_bigquery: bool) -> tuple[str, float]:
        token = f"ya29.local-{prefix}-{next(self._counter)}-{secrets.token_urlsafe(16)}"
        self.tokens[token] = _Token(principal, time.time() + self.lifetime_seconds, for_bigquery)
        return token, self.lifetime_seconds + GOOGLE_REFRESH_SECONDS

    def valid(self, token: str, *, for_bigquery: bool) -> bool:
        issued = self.tokens.get(token)
        return issued is not None and issued.for_bigquery == for_bigquery and time.time() <= issued.valid_until + GRACE_SECONDS

    def _exchange(self, form: dict[str, list[str]]) -> tuple[int, dict]:
        answer = self._check_exchange({k: v[0] for k, v in form.items()})
        self.exchanges.append(answer)
        return answer

    def _check_exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        def error(code: str, description: str) -> tuple[int, dict]:
            return 400, {"error": code, "error_description": description}

        if form.get("grant_type") != TOKEN_EXCHANGE or form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return error("invalid_request", "grant_type must be token-exchange, requested_token_type access_token")
        if form.get("audience", "").removeprefix("https:") != self.provider:
            return error("invalid_target", 'The target service indicated by the "audience" parameters is invalid. This '
                         "might either be because the pool or provider is disabled or deleted or because it doesn't exist.")
        if form.get("subject_token_type") != AWS_SUBJECT_TOKEN_TYPE:
            return error("invalid_request", "subject_token_type must be " + AWS_SUBJECT_TOKEN_TYPE)
        try:
            signed = json.loads(unquote(form.get("subject_token", "")))
            headers = {h["key"].lower(): h["value"] for h in signed["headers"]}
            url, method = signed["url"], signed["method"]
        except (ValueError, KeyError, TypeError):
            return error("invalid_grant", "The subject token is not a serialized AWS GetCallerIdentity request.")
        if headers.get("x-goog-cloud-target-resource", "").removeprefix("https:") != self.provider:
            return error("invalid_grant", "The x-goog-cloud-target-resource header of the subject token does not match "
                         "the audience.")
        try:
            arn = self.aws.get_caller_identity(url, method, headers)
        except AwsError as exc:
            return error("invalid_grant", f"Received invalid AWS response of type {exc.code} with error message: "
                         f"{exc.message}")
        if len(arn.encode()) > 127:
            return error("invalid_request", "The size of mapped attribute google.subject exceeds the 127 bytes limit.")
        aws_role = arn.rsplit("/", 1)[0] if ":assumed-role/" in arn else arn  # Google's default aws_role mapping
        if aws_role != self.aws_role:
            return error("unauthorized_client", "The given credential is rejected by the attribute condition.")
        principal = (f"principalSet://iam.googleapis.com/projects/{self.project_number}/locations/global/"
                     f"workloadIdentityPools/{self.pool}/attribute.aws_role/{aws_role}")
        token, expires_in = self._token("sts", principal, for_bigquery=self.service_account is None)
        return 200, {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                     "expires_in": int(expires_in)}

    def _generate(self, email: str, authorization: str, body: bytes) -> tuple[int, dict]:
        def error(code: int, status: str, message: str) -> tuple[int, dict]:
            return code, {"error": {"code": code, "message": message, "status": status}}

        token = authorization.removeprefix("Bearer ")
        if not self.valid(token, for_bigquery=False):
            return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        allowed = self.impersonators if self.impersonators is not None else (self.principal_set,)
        if email != self.service_account or self.tokens[token].principal not in allowed:
            return error(403, "PERMISSION_DENIED",
                         "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
        if "https://www.googleapis.com/auth/cloud-platform" not in json.loads(body or b"{}").get("scope", []):
            return error(400, "INVALID_ARGUMENT", "scope must include cloud-platform")
        access, expires_in = self._token("iam", f"serviceAccount:{email}", for_bigquery=True)
        return 200, {"accessToken": access, "expireTime": _iso(time.time() + expires_in)}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class BearerProxy:
    """Forwards to a local BigQuery only requests whose bearer token ``google`` issued for BigQuery and still valid."""

    def __init__(self, target_url: str, google: LocalGoogle) -> None:
        self.seen: list[str] = []  # every bearer token presented, in order
        self.refused: list[str] = []
        target = urlsplit(target_url)
        outer = self

        class Handler(_Handler):
            def forward(self) -> None:
                body = self.body()
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                outer.seen.append(token)
                if not google.valid(token, for_bigquery=True):
                    outer.refused.append(token)
                    self.reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                               "message": "Request had invalid authentication credentials."}})
                    return
                forward(self, target, body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward  # noqa: N815 - http.server's names

        self._server, self.url = serve(Handler)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
