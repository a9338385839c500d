"""A local AWS (LocalStack) for the integration tests; never used in production.

LocalStack 4.12 runs without Docker in its own venv, ``.venv-localstack`` (``make localstack``
installs it; its dependencies clash with the CDK's). It implements the AWS APIs (EventBridge with
AWS's input-template validation and rule matching, SNS, SQS, CloudWatch, KMS, CloudFormation, ...)
but does not enforce IAM, resource or key policies, and has no ECS.

    with LocalAws() as aws:                 # aws.url == "http://127.0.0.1:<free port>"
        sqs = aws.client("sqs")

Or from a shell: ``.venv/bin/python -m dev.local_aws`` (prints the URL, Ctrl-C stops it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess as sp
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
LOCALSTACK_PYTHON = ROOT / ".venv-localstack" / "bin" / "python"
REGION = "us-east-1"
ACCOUNT = "000000000000"  # LocalStack's default account
_START_TIMEOUT_SECONDS = 120
_STOP_TIMEOUT_SECONDS = 20


# Two adjustments LocalStack 4.12 needs on Python 3.11, applied before it starts (then it runs as
# `python -m localstack.runtime.main`):
# 1. KMS CreateKey calls uuid.uuid5 with bytes, which only Python >= 3.12 accepts ("encoding
#    without a string argument"): accept bytes as 3.12 does.
# 2. EventBridge fails to deliver a string input template that inserts a number (an ECS exit code:
#    "sequence item 1: expected str instance, int found"). EventBridge inserts the number's text (the
#    input-transformer tutorial, eb-input-transformer-tutorial.html); do the same, only for
#    templates that are not JSON objects.
# 3. Its Step Functions provider imports localstack.packages, whose annotation ``Lock | None`` fails
#    on Python 3.11, where threading.Lock is a function, not a class: make it a class whose
#    instances are the real locks.
_BOOT = """
import _thread
import hashlib
import runpy
import threading
import uuid


class _Lock:
    def __new__(cls):
        return _thread.allocate_lock()


threading.Lock = _Lock

_uuid5 = uuid.uuid5


def _uuid5_of_bytes(namespace, name):
    if isinstance(name, bytes):
        return uuid.UUID(bytes=hashlib.sha1(namespace.bytes + name).digest()[:16], version=5)
    return _uuid5(namespace, name)


uuid.uuid5 = _uuid5_of_bytes

from localstack.services.events import target  # noqa: E402

_replace = target.replace_template_placeholders


def _numbers_as_text(template, replacements):
    if not template.strip().startswith("{"):
        replacements = {k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                        for k, v in replacements.items()}
    return _replace(template, replacements)


target.replace_template_placeholders = _numbers_as_text
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
"""


class LocalAwsError(RuntimeError):
    """LocalStack is missing or did not start; the message says what to do."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAws:
    """Start LocalStack on a free loopback port in its own process; stop it and remove its files on exit."""

    def __init__(self, *, python: Path = LOCALSTACK_PYTHON, env: dict[str, str] | None = None) -> None:
        self._python = python
        self._env = env or {}  # LocalStack settings, e.g. SFN_MOCK_CONFIG (a Step Functions mock file)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: sp.Popen[bytes] | None = None
        self._log: TextIO | None = None
        self.url = ""

    def start(self) -> LocalAws:
        """Start LocalStack and wait until every service answers; returns self."""
        if not self._python.exists():
            raise LocalAwsError(f"{self._python} is missing: run `make localstack` (make integration does it)")
        self._tmp = tempfile.TemporaryDirectory(prefix="local_aws_")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_"))},
            "RUNTIME_COMPONENTS": "aws",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "LOCALSTACK_VOLUME_DIR": f"{self._tmp.name}/volume",
            "TMPDIR": self._tmp.name,
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",  # no analytics
            **self._env,
        }
        self._log = open(f"{self._tmp.name}/localstack.log", "w")  # noqa: SIM115 - closed in stop()
        self._proc = sp.Popen(
            [str(self._python), "-c", _BOOT],
            cwd=self._tmp.name, env=env, stdout=self._log, stderr=sp.STDOUT, start_new_session=True,
        )
        self._wait_ready(self._proc)
        return self

    def _wait_ready(self, proc: sp.Popen[bytes]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/_localstack/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise LocalAwsError(f"LocalStack did not become ready within {_START_TIMEOUT_SECONDS} s; its log ends:\n{tail}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of LocalStack's own log, for a failure message."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "localstack.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Stop LocalStack (SIGTERM, then SIGKILL to its process group); idempotent."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except (ProcessLookupError, sp.TimeoutExpired):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def client(self, service: str) -> Any:  # boto3 clients are untyped (mypy.ini)
        """A boto3 client for this LocalStack (test credentials, never real ones)."""
        import boto3

        return boto3.client(
            service, endpoint_url=self.url, region_name=REGION,
            aws_access_key_id="test", aws_secret_access_key="test",  # noqa: S106 - LocalStack's fixed test keys
        )

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    with LocalAws() as aws:
        print(f"LocalStack ready at {aws.url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
