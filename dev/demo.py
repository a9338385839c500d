"""``make run``: the real job (``python -m etl_job``) against a local BigQuery seeded with demo rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dev.local_bigquery import PROJECT, LocalBigQuery
from etl_job.config import BATCH_TRANSFORM

if TYPE_CHECKING:  # imported where used: the google client is slow to import
    from google.cloud import bigquery

ROOT = Path(__file__).resolve().parent.parent
DATASET = "demo"
SOURCE = f"{PROJECT}.{DATASET}.customers"
DESTINATION = f"{PROJECT}.{DATASET}.customers_clean"
FIRST_NAMES = ("John", "Jane", "Alex", "Maria", "Sam")
LAST_NAMES = ("Doe", "Smith", "Doe-Ray", "Nguyen", "Garcia", "Dover")
ROWS = 1000
SQL_DESTINATION = f"{DESTINATION}_sql"
BATCH_DESTINATION = f"{DESTINATION}_batch"
DOE, DAS = "name LIKE '%Doe%'", "name LIKE '%Das%'"


def _seed(client: bigquery.Client) -> None:
    from google.cloud import bigquery

    schema = [
        bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("email", "STRING"),
        bigquery.SchemaField("signed_up_at", "TIMESTAMP"),
    ]
    rows = [
        {
            "id": i,
            "name": f"{FIRST_NAMES[i % len(FIRST_NAMES)]} {LAST_NAMES[i % len(LAST_NAMES)]}",
            "email": f"customer{i}@example.com",
            "signed_up_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T09:30:00Z",
        }
        for i in range(1, ROWS + 1)
    ]
    client.create_dataset(DATASET)
    client.create_table(bigquery.Table(SOURCE, schema=schema))
    config = bigquery.LoadJobConfig(schema=schema, write_disposition="WRITE_TRUNCATE")
    client.load_table_from_json(rows, SOURCE, job_config=config).result()


def _count(client: bigquery.Client, table: str, where: str = "TRUE") -> int:
    return next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{table}` WHERE {where}").result())).n


def _table_exists(client: bigquery.Client, table: str) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        client.get_table(table)
    except NotFound:
        return False
    return True


def _rows(client: bigquery.Client, table: str) -> list[dict]:
    query = f"SELECT * EXCEPT (run_id, processed_at) FROM `{table}` ORDER BY id"
    return [dict(row.items()) for row in client.query(query).result()]


def _same_rule(client: bigquery.Client, env: dict[str, str], destination: str, setting: dict[str, str],
               shown: str, what: str) -> int:
    """Run the same rule in another form into another table; show that the rows agree."""
    env = {**env, **setting, "ETL_DESTINATION_TABLE": destination}
    print(f"\n$ {shown} ETL_DESTINATION_TABLE={destination} python -m etl_job   # the same rule {what}", flush=True)
    code = subprocess.run([sys.executable, "-m", "etl_job"], cwd=ROOT, env=env).returncode
    print(f"\njob exit code {code}")
    if code == 0:
        same = "yes" if _rows(client, destination) == _rows(client, DESTINATION) else "NO"
        print(f"{destination}: {_count(client, destination):,} rows; the same rows as {DESTINATION} "
              f"apart from run_id and processed_at: {same}")
    return code


def _other_forms(client: bigquery.Client, env: dict[str, str]) -> int:
    """The rule in the transform's batch form, then on the SQL path (etl_job/transform.sql)."""
    return _same_rule(client, env, BATCH_DESTINATION, {"ETL_TRANSFORM": BATCH_TRANSFORM}, f"ETL_TRANSFORM={BATCH_TRANSFORM}",
                      "in the batch form: one Arrow call per batch") or _same_rule(
        client, env, SQL_DESTINATION, {"ETL_TRANSFORM_SQL": (ROOT / "etl_job" / "transform.sql").read_text()},
        'ETL_TRANSFORM_SQL="$(cat etl_job/transform.sql)"', "in SQL: one INSERT inside BigQuery")


def main() -> int:
    """Start a local BigQuery, seed it, run the job on it, show the result; return the job's exit code."""
    started = time.monotonic()
    with LocalBigQuery(subprocess=True) as bq:
        client = bq.client()
        _seed(client)
        print(f"local BigQuery at {bq.url}: {SOURCE} has {_count(client, SOURCE):,} rows, "
              f"{_count(client, SOURCE, DOE):,} of them with 'Doe' in the name\n", flush=True)

        env = {
            **os.environ,
            "BIGQUERY_EMULATOR_HOST": bq.url,
            "ETL_SOURCE_TABLE": SOURCE,
            "ETL_DESTINATION_TABLE": DESTINATION,
            "ETL_BATCH_SIZE": "250",
            "ETL_STAGE": "local",
        }
        env.pop("GOOGLE_CREDENTIALS_JSON", None)
        env.setdefault("ETL_LOG_FORMAT", "text")  # for people, even when piped
        print("$ python -m etl_job", flush=True)
        code = subprocess.run([sys.executable, "-m", "etl_job"], cwd=ROOT, env=env).returncode

        print(f"\njob exit code {code}")
        if _table_exists(client, DESTINATION):
            print(f"{DESTINATION}: {_count(client, DESTINATION):,} rows, "
                  f"{_count(client, DESTINATION, DOE):,} with 'Doe', "
                  f"{_count(client, DESTINATION, DAS):,} with 'Das'; a sample:")
            sample = client.query(f"SELECT id, name, email, run_id, processed_at FROM `{DESTINATION}` ORDER BY id LIMIT 6")
            for row in sample.result():
                print(f"  {row.id:>4}  {row.name:<16} {row.email:<26} run {row.run_id}  {row.processed_at:%H:%M:%S}")
            code = code or _other_forms(client, env)
    print(f"\n(local BigQuery stopped; demo took {time.monotonic() - started:.1f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
