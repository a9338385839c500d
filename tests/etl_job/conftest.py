"""Fixtures for the job's tests: one local BigQuery per session, a fresh dataset per test, the real job process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dev.local_bigquery import PROJECT, LocalBigQuery
from dev.proxy import forward

ROOT = Path(__file__).resolve().parents[2]
_datasets = itertools.count()
# The real job with a shorter stop deadline (a test cannot wait 90 s): argv[1] is the deadline in seconds.
_WITH_DEADLINE = (
    "import runpy, sys; from etl_job import stopping; stopping.DEADLINE_SECONDS = float(sys.argv[1]); "
    "runpy.run_module('etl_job', run_name='__main__', alter_sys=True)"
)
# The real job with some module constants changed (a test cannot wait a minute): argv[1] is JSON
# {"module.NAME": value}.
_WITH_SETTINGS = (
    "import importlib, json, runpy, sys\n"
    "for name, value in json.loads(sys.argv[1]).items():\n"
    "    module, _, attribute = name.rpartition('.')\n"
    "    setattr(importlib.import_module(module), attribute, value)\n"
    "runpy.run_module('etl_job', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="session")
def local_bigquery():
    """A local BigQuery in its own process for the whole session."""
    with LocalBigQuery(subprocess=True) as bq:
        yield bq


@pytest.fixture(scope="session")
def bq_client(local_bigquery):
    """A google-cloud-bigquery client talking to the local BigQuery."""
    return local_bigquery.client()


@dataclass
class Job:
    """A fresh dataset with a source table, and a way to run ``python -m etl_job`` on it."""

    client: object
    url: str
    dataset: str

    @property
    def source(self) -> str:
        return f"{PROJECT}.{self.dataset}.source"

    @property
    def destination(self) -> str:
        return f"{PROJECT}.{self.dataset}.destination"

    @property
    def errors(self) -> str:
        return f"{self.destination}_errors"

    def env(self, **overrides: str) -> dict:
        """The job's environment for this dataset; pass NAME=None to unset a variable."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ETL_", "GOOGLE_", "ECS_", "AWS_")) and key != "BIGQUERY_EMULATOR_HOST"
        }
        env.update(
            BIGQUERY_EMULATOR_HOST=self.url,
            ETL_SOURCE_TABLE=self.source,
            ETL_DESTINATION_TABLE=self.destination,
            ETL_LOG_FORMAT="json",
            ETL_STAGE="test",
            NO_GCE_CHECK="True",  # google.auth: do not probe for a GCE metadata server
        )
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self, deadline: float | None = None, **overrides: str) -> subprocess.Popen:
        """Start the real job process (stdout and stderr captured), optionally with a shorter stop deadline."""
        command = ["-m", "etl_job"] if deadline is None else ["-c", _WITH_DEADLINE, str(deadline)]
        return subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=self.env(**overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, timeout: float = 120, settings: dict | None = None, **overrides: str) -> subprocess.CompletedProcess:
        """Run the real job process to the end, optionally with module constants changed (``settings``)."""
        command = ["-c", _WITH_SETTINGS, json.dumps(settings)] if settings else ["-m", "etl_job"]
        return subprocess.run(
            [sys.executable, *command],
            cwd=ROOT,
            env=self.env(**overrides),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def seed(self, rows: int, *, doe_every: int = 3) -> None:
        """Create the source table with ``rows`` rows (id, name, score, created_at); every n-th name has "Doe"."""
        from google.cloud import bigquery

        schema = source_schema()
        self.client.create_table(bigquery.Table(self.source, schema=schema))
        data = [source_row(i, doe_every) for i in range(1, rows + 1)]
        config = bigquery.LoadJobConfig(schema=schema, write_disposition="WRITE_APPEND")
        self.client.load_table_from_json(data, self.source, job_config=config).result()

    def create_source(self, rows: list[dict], *, key_mode: str = "NULLABLE") -> None:
        """Create the source table (the seed's schema, key mode ``key_mode``) holding exactly ``rows``."""
        from google.cloud import bigquery

        schema = [bigquery.SchemaField("id", "INT64", mode=key_mode), *source_schema()[1:]]
        self.client.create_table(bigquery.Table(self.source, schema=schema))
        config = bigquery.LoadJobConfig(schema=schema, write_disposition="WRITE_APPEND")
        self.client.load_table_from_json(rows, self.source, job_config=config).result()

    def rows(self, table: str | None = None) -> list[dict]:
        """All rows of a table (default: the destination), ordered by id."""
        table = table or self.destination
        order = "id" if table != self.errors else "error"
        return [dict(r.items()) for r in self.client.query(f"SELECT * FROM `{table}` ORDER BY {order}").result()]

    def count(self, table: str | None = None) -> int:
        """Row count of a table (default: the destination)."""
        return next(iter(self.client.query(f"SELECT COUNT(*) AS n FROM `{table or self.destination}`").result())).n


def kill_after_first_batch(process: subprocess.Popen) -> None:
    """SIGKILL a started job once it has loaded a batch: no cleanup at all, possibly mid-load."""
    for line in process.stderr:
        if '"batch loaded"' in line:
            process.kill()
            break
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def source_schema():
    from google.cloud import bigquery

    return [
        bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("score", "NUMERIC"),
        bigquery.SchemaField("created_at", "TIMESTAMP"),
    ]


def source_row(i: int, doe_every: int = 3) -> dict:
    return {
        "id": i,
        "name": f"John Doe {i}" if i % doe_every == 0 else f"Jane Roe {i}",
        "score": f"{i}.25",
        "created_at": f"2024-01-{1 + i % 28:02d}T05:00:00.123456Z",
    }


@pytest.fixture
def job(local_bigquery, bq_client) -> Job:
    """A fresh, empty dataset in the session's local BigQuery."""
    dataset = f"test_{os.getpid()}_{next(_datasets)}"
    bq_client.create_dataset(dataset)
    yield Job(client=bq_client, url=local_bigquery.url, dataset=dataset)
    bq_client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


class _Hold(BaseHTTPRequestHandler):
    """Forwards each request to the local BigQuery, but never answers one whose body holds ``proxy.hold``."""

    protocol_version = "HTTP/1.1"
    proxy: HoldingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.proxy.bodies.append(body)
        if self.proxy.hold in body:
            self.proxy.held.set()
            self.proxy.release.wait(60)
            self.close_connection = True  # dropped: the request never reached BigQuery
            return
        forward(self, self.proxy.target, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's names

    def log_message(self, *args) -> None:
        pass


class HoldingProxy:
    """A local BigQuery that hangs on one kind of call: requests whose body contains ``hold`` get no answer.

    ``hold=b""`` holds every request (an endpoint that accepts connections and never answers). Every
    request body is kept in ``bodies``: what the job sent on the wire.
    """

    def __init__(self, target_url: str, hold: bytes) -> None:
        self.target = urlsplit(target_url)
        self.hold = hold
        self.bodies: list[bytes] = []
        self.held = threading.Event()  # set once a request was held
        self.release = threading.Event()  # set to drop the held requests
        handler = type("Handler", (_Hold,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def holding_proxy(local_bigquery):
    """Make a HoldingProxy in front of the session's local BigQuery: ``holding_proxy(b"MERGE ")``."""
    proxies: list[HoldingProxy] = []

    def make(hold: bytes) -> HoldingProxy:
        proxies.append(HoldingProxy(local_bigquery.url, hold))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
