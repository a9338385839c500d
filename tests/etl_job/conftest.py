"""Fixtures for the job's tests: one local BigQuery per session, a fresh dataset per test, the real job process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev.local_bigquery import PROJECT, LocalBigQuery

ROOT = Path(__file__).resolve().parents[2]
_datasets = itertools.count()


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

    def start(self, **overrides: str) -> subprocess.Popen:
        """Start the real job process (stdout and stderr captured)."""
        return subprocess.Popen(
            [sys.executable, "-m", "etl_job"],
            cwd=ROOT,
            env=self.env(**overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, timeout: float = 120, **overrides: str) -> subprocess.CompletedProcess:
        """Run the real job process to the end."""
        return subprocess.run(
            [sys.executable, "-m", "etl_job"],
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

    def rows(self, table: str | None = None) -> list[dict]:
        """All rows of a table (default: the destination), ordered by id."""
        table = table or self.destination
        order = "id" if table != self.errors else "error"
        return [dict(r.items()) for r in self.client.query(f"SELECT * FROM `{table}` ORDER BY {order}").result()]

    def count(self, table: str | None = None) -> int:
        """Row count of a table (default: the destination)."""
        return next(iter(self.client.query(f"SELECT COUNT(*) AS n FROM `{table or self.destination}`").result())).n


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
