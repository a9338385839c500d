"""Test-wide settings (before aws_cdk is imported), and the job's fixtures that tests/etl_job and tests/integration
share: one local BigQuery per session, a fresh dataset per test, the real job process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dev.local_bigquery import PROJECT, LocalBigQuery
from tests.support import CDK, ROOT, CliSynth, offline_env, source_row, source_schema

# Node 20 still runs jsii fine; its end-of-life banner would drown the test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

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
# The real job, printing at its exit which of the modules named in argv[1] (comma-separated) it has loaded.
_LOADED_AT_EXIT = (
    "import os, runpy, sys\n"
    "watched, end = sys.argv.pop(1).split(','), os._exit\n"
    "def report(code):\n"
    "    print('loaded:', ','.join(m for m in watched if sys.modules.get(m) is not None), flush=True)\n"
    "    end(code)\n"
    "os._exit = report\n"
    "runpy.run_module('etl_job', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="session")
def local_bigquery() -> Iterator[LocalBigQuery]:
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
    grpc: str  # the local BigQuery's Storage Read API (host:port)
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
            if not key.startswith(("ETL_", "GOOGLE_", "ECS_", "AWS_", "BIGQUERY_"))
        }
        env.update(
            BIGQUERY_EMULATOR_HOST=self.url,
            # stays on the local BigQuery's gRPC port when a test sends REST through a proxy
            BIGQUERY_STORAGE_EMULATOR_HOST=self.grpc,
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

    def run(self, timeout: float = 120, settings: dict | None = None, watch: tuple[str, ...] = (),
            **overrides: str) -> subprocess.CompletedProcess:
        """Run the real job process to the end, optionally with module constants changed (``settings``), or printing
        on stdout, last, which of the modules in ``watch`` it loaded (``loaded: a,b``)."""
        command = (["-c", _WITH_SETTINGS, json.dumps(settings)] if settings
                   else ["-c", _LOADED_AT_EXIT, ",".join(watch)] if watch else ["-m", "etl_job"])
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


@pytest.fixture
def job(local_bigquery, bq_client) -> Job:
    """A fresh, empty dataset in the session's local BigQuery."""
    dataset = f"test_{os.getpid()}_{next(_datasets)}"
    bq_client.create_dataset(dataset)
    yield Job(client=bq_client, url=local_bigquery.url, grpc=local_bigquery.grpc, dataset=dataset)
    bq_client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="session")
def cli_synth(tmp_path_factory: pytest.TempPathFactory) -> CliSynth:
    """`cdk synth --no-lookups --quiet` of the dev stage, offline, once per session (read it, do not change it)."""
    if not CDK.exists():
        pytest.skip("run through `make test`, which installs the pinned CDK CLI")
    home = tmp_path_factory.mktemp("cli")
    done = subprocess.run(
        [str(CDK), "synth", "--no-lookups", "--quiet", "-o", str(home / "assembly")],
        cwd=ROOT, env=offline_env(home), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return CliSynth(assembly=home / "assembly", output=done.stdout + done.stderr)
