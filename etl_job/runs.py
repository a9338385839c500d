"""What a run is on either path (``pipeline``, ``sql_transform``): its id, its slice of the keys, what it did,
the lineage columns it writes, and the pieces of SQL and checks both paths share.

Apart from ``pipeline`` so that the SQL path does not import the Python path (Arrow, Parquet): the job starts sooner.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.cloud import bigquery

from etl_job.config import TableId
from etl_job.errors import JobError

if TYPE_CHECKING:
    from etl_job.bigquery_io import BigQuery
    from etl_job.config import Config

LINEAGE = (
    bigquery.SchemaField("run_id", "STRING", description="the run that wrote the row"),
    bigquery.SchemaField("processed_at", "TIMESTAMP", description="when the row was transformed and loaded"),
)


@dataclass(frozen=True)
class Shard:
    """A slice of the key space: rows whose key hashes to ``index`` modulo ``count``."""

    index: int = 0
    count: int = 1


@dataclass
class RunResult:
    """What a run did; ``complete`` is False when it stopped before reading all its input."""

    run_id: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_failed: int = 0  # rows written to the errors table: transform failures, bad values, duplicate keys
    rows_skipped: int = 0  # rows the transform skipped (SKIP): recorded, not read again
    rows_duplicate_key: int = 0  # of rows_failed: the extra rows of a key several source rows share
    rows_null_key: int = 0  # source rows with a NULL key: neither loaded nor in the errors table
    rows_abandoned: int = 0  # rows left for the next run because this one stopped
    rows_checked_by_row: int = 0  # batch form: rows the column checks did not pass, checked one by one instead
    batches: int = 0
    complete: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"extract": 0.0, "transform": 0.0, "load": 0.0})


def new_run_id() -> str:
    """A sortable, unique run id, e.g. ``20240131T050000Z-1a2b3c4d``."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def filter_sql(source_filter: str | None) -> str:
    """The source filter (ETL_SOURCE_FILTER) as a WHERE condition on ``s``, or nothing.

    On lines of its own, so that a ``--`` comment in it ends with it.
    """
    return f"  AND (\n{source_filter}\n)\n" if source_filter else ""


def source_table(config: Config, bq: BigQuery) -> bigquery.Table:
    """The source table's metadata; a JobError naming ETL_SOURCE_TABLE if it does not exist."""
    source = bq.get_table(config.source_table)
    if source is None:
        raise JobError(f"source table {config.source_table} does not exist (ETL_SOURCE_TABLE): "
                       "check the name and that the service account can read it")
    return source


def require_dataset(bq: BigQuery, table: TableId) -> None:
    """Raise a JobError naming the `bq mk` command unless the destination table's dataset exists."""
    if not bq.dataset_exists(table):
        dataset = f"{table.project}:{table.dataset}"
        raise JobError(
            f"dataset {dataset.replace(':', '.')} of ETL_DESTINATION_TABLE does not exist: create it "
            f"(bq mk --dataset --location=<the source's location> {dataset})"
        )
