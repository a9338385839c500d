"""The Google key never reaches a log line or an error, and is gone from the process environment once parsed.

Each test runs the real ``python -m etl_job`` process with a service-account key generated at test time
(a fresh RSA key, never written to the repository), put where a person might paste it by mistake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from dev.local_wif import serve
from dev.proxy import answer
from tests.support import CLOSED_URL, FAST_CALL_LIMITS, ROOT, TRANSFORMS, log_lines

CLOSED_TOKEN_URI = f"{CLOSED_URL}/token"  # refused, as when the task cannot reach Google at all
# A token endpoint's answers, by path: /token as Google answers a fake key (its signature checks out against no
# key Google knows), /busy as Google when it is overloaded, /proxy as a proxy in the way with an empty page.
TOKEN_ANSWERS = {
    "/token": (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
    "/busy": (503, {"error": "temporarily_unavailable", "error_description": "try again"}),
    "/proxy": (502, None),
}


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[str]:
    """A local token endpoint answering as TOKEN_ANSWERS says; its base URL."""

    class Answering(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = TOKEN_ANSWERS[self.path]
            answer(self, status, {"Content-Type": "application/json"}, b"" if body is None else json.dumps(body).encode())

        def log_message(self, *args: object) -> None:
            pass

    server, url = serve(Answering)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fake_key(token_endpoint: str) -> dict:
    """A service-account key of the shape `gcloud iam service-accounts keys create` writes, with a new RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "my-gcp-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "etl-job@my-gcp-project.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "token_uri": f"{token_endpoint}/token",
    }


def key_material(key: dict) -> list[str]:
    """Every line of the PEM body: none may appear in any output, even in part."""
    return [line for line in key["private_key"].splitlines() if "-----" not in line] + ["PRIVATE KEY"]


def run_job(secret: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "GOOGLE_", "ECS_", "AWS_", "BIGQUERY_"))}
    base.update(
        ETL_SOURCE_TABLE="my-gcp-project.etl_demo.names",
        ETL_DESTINATION_TABLE="my-gcp-project.etl_demo.names_transformed",
        ETL_LOG_FORMAT="json",
        NO_GCE_CHECK="True",
        GOOGLE_CREDENTIALS_JSON=secret,
        **env,
    )
    return subprocess.run([sys.executable, "-m", "etl_job"], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120)


def pasted(key: dict, where: str) -> dict:
    pem = key["private_key"]
    return {
        "type": {**key, "type": pem},
        "client_email as text": {**key, "client_email": pem},
        "client_email as a list": {**key, "client_email": [pem]},
        "private_key as a list": {**key, "private_key": pem.splitlines()},
        "private_key as an object": {**key, "private_key": {"pem": pem}},
        "private_key cut": {**key, "private_key": pem[40:]},
    }[where]


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("type", "'type' field of a string, not a known credential type"),
        ("client_email as text", "'client_email' is not an e-mail address"),
        ("client_email as a list", "'client_email' is a list"),
        ("private_key as a list", "'private_key' is a list"),
        ("private_key as an object", "'private_key' is an object"),
        ("private_key cut", "Google's library rejected it: ValueError"),
    ],
)
def test_a_key_in_the_wrong_field_is_named_never_printed(fake_key: dict, where: str, named: str) -> None:
    done = run_job(json.dumps(pasted(fake_key, where)))

    output = done.stdout + done.stderr
    leaked = [line for line in key_material(fake_key) if line in output]
    assert leaked == [], f"key material in the job's output: {leaked[:2]}"
    assert done.returncode == 1
    last = log_lines(done.stderr)[-1]
    assert named in last["message"] and "GOOGLE_CREDENTIALS_JSON" in last["message"]
    assert "put-secret-value" in last["message"] and "Traceback" not in output


def test_the_credentials_line_names_the_account_and_nothing_of_the_key(fake_key: dict) -> None:
    done = run_job(json.dumps(fake_key))

    output = done.stdout + done.stderr
    assert [line for line in key_material(fake_key) if line in output] == []
    (using,) = [line for line in log_lines(done.stderr) if line["message"] == "using Google credentials"]
    assert using["credentials"] == f"GOOGLE_CREDENTIALS_JSON (service_account: {fake_key['client_email']})"
    assert done.returncode == 1  # the key is fake: the token endpoint rejects it
    assert log_lines(done.stderr)[-1]["message"].startswith("Google rejected the credentials (invalid_grant")


@pytest.mark.parametrize("path", ["/busy", "/proxy"])
def test_a_token_endpoint_that_fails_to_answer_is_not_called_a_rejection_of_the_key(fake_key: dict, token_endpoint: str,
                                                                                   path: str) -> None:
    done = run_job(json.dumps({**fake_key, "token_uri": f"{token_endpoint}{path}"}))

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    message = log_lines(done.stderr)[-1]["message"]
    assert message.startswith("Google's token endpoint failed to answer the sign-in (") and "rejected" not in message


def test_a_token_endpoint_out_of_reach_is_named_as_connectivity_not_as_a_rejected_key(job, fake_key: dict) -> None:
    done = job.run(GOOGLE_CREDENTIALS_JSON=json.dumps({**fake_key, "token_uri": CLOSED_TOKEN_URI}),
                   BIGQUERY_EMULATOR_HOST=None, BIGQUERY_STORAGE_EMULATOR_HOST=None, settings=FAST_CALL_LIMITS)

    assert done.returncode == 1
    message = log_lines(done.stderr)[-1]["message"]
    assert message.startswith("could not reach Google's token endpoint to sign in (")
    assert "a connectivity problem; check the task's network path" in message and "rejected" not in message
    assert [line for line in key_material(fake_key) if line in done.stdout + done.stderr] == []


def test_the_key_is_gone_from_the_environment_before_the_transform_runs(job, fake_key: dict) -> None:
    """The transform looks in os.environ, a child process's environment and /proc/self/environ."""
    job.seed(5)
    marker = fake_key["private_key"].splitlines()[3]

    done = job.run(GOOGLE_CREDENTIALS_JSON=json.dumps(fake_key), ETL_TRANSFORM=f"{TRANSFORMS}:key_hunter",
                   ETL_TEST_KEY_MARKER=marker)

    assert done.returncode == 0, log_lines(done.stderr)[-1]
    assert job.count() == 5 and job.count(job.errors) == 0


def test_a_local_endpoint_for_real_credentials_needs_the_storage_endpoint_beside_it_on_the_python_path(fake_key: dict) -> None:
    """Else the rows would be read from Google's Storage Read API while every other call goes to the local one."""
    done = run_job(json.dumps(fake_key), ETL_BIGQUERY_ENDPOINT=CLOSED_URL)

    assert done.returncode == 1
    last = log_lines(done.stderr)[-1]
    assert "BIGQUERY_STORAGE_EMULATOR_HOST" in last["message"] and "ETL_BIGQUERY_ENDPOINT" in last["message"]
    assert "Traceback" not in done.stderr
