"""What a run is on either path (``pipeline``, ``sql_transform``): its id, its slice of the keys, what it did,
the lineage columns it writes, and the pieces of SQL and checks both paths share.

Apart from ``pipeline`` so that the SQL path does not import the Python path (Arrow, Parquet): the job starts sooner.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery

from etl_job.config import ENV_NAMES
from etl_job.errors import JobError

if TYPE_CHECKING:
    from etl_job.bigquery_io import BigQuery
    from etl_job.config import Config, TableId

MAX_MESSAGE_CHARS = 500  # of BigQuery's message about a check that failed

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


def _filter_sql(source_filter: str | None) -> str:
    """The source filter (ETL_SOURCE_FILTER) as a WHERE condition on ``s``, or nothing.

    On lines of its own, so that a ``--`` comment in it ends with it.
    """
    return f"  AND (\n{source_filter}\n)\n" if source_filter else ""


def pending_sql(config: Config, shard: Shard, skipped: TableId | None, *, one_per_key: bool = False,
                null_keys: bool = False, run_id: str | None = None) -> str:
    """FROM and WHERE of the source rows (aliased ``s``) still to process, on either path: those the source filter
    selects, of this shard, whose key is neither in the destination (the checkpoint) nor, given ``skipped``, among
    the keys the Python transform skipped.

    With ``one_per_key``, one (arbitrary) row of each key; with ``null_keys``, rows with a NULL key too (to count
    them); with ``run_id``, the rows that run inserted count as still to process.
    """
    key = config.key_column
    own_rows = f" AND d.run_id IS DISTINCT FROM '{run_id}'" if run_id else ""
    sharded = ""
    if shard.count > 1:  # only when sharded: a local BigQuery drops STRUCT columns when FARM_FINGERPRINT is called
        hashed = f"ABS(MOD(FARM_FINGERPRINT(CAST(s.`{key}` AS STRING)), {shard.count})) = {shard.index}"
        sharded = f"  AND ({f's.`{key}` IS NULL OR ' if null_keys else ''}{hashed})\n"
    return (
        f"FROM {config.source_table.sql} AS s\n"
        f"WHERE {'TRUE' if null_keys else f's.`{key}` IS NOT NULL'}\n"
        f"{_filter_sql(config.source_filter)}"
        f"  AND {key_not_in(config.destination_table, key, row='s', alias='d', condition=own_rows)}\n"
        + (f"  AND {key_not_in(skipped, key, row='s', alias='k')}\n" if skipped else "")
        + sharded
        + (f"QUALIFY ROW_NUMBER() OVER (PARTITION BY s.`{key}`) = 1\n" if one_per_key else "")
    )


def key_not_in(table: TableId, key: str, *, row: str, alias: str, condition: str = "") -> str:
    """That the key of ``row`` (an alias) is not in ``table`` (aliased ``alias``): an anti-join."""
    return f"NOT EXISTS (SELECT 1 FROM {table.sql} AS {alias} WHERE {alias}.`{key}` = {row}.`{key}`{condition})"


def filtered_source(config: Config) -> str:
    """FROM the source (aliased ``s``) WHERE the source filter holds (ETL_SOURCE_FILTER), or every row."""
    return f"FROM {config.source_table.sql} AS s WHERE TRUE\n{_filter_sql(config.source_filter)}"


def checked_source(config: Config, bq: BigQuery) -> bigquery.Table:
    """The source table (or view), once it is known to exist and to have a scalar key column (either path
    partitions and joins on it); else a JobError naming ETL_SOURCE_TABLE or ETL_KEY_COLUMN."""
    source = bq.get_table(config.source_table)
    if source is None:
        raise JobError(f"source table {config.source_table} does not exist (ETL_SOURCE_TABLE): "
                       "check the name and that the service account can read it")
    key = next((f for f in source.schema if f.name == config.key_column), None)
    if key is None or key.mode == "REPEATED" or key.field_type in ("RECORD", "STRUCT"):
        raise JobError(
            f"source table {config.source_table} has no scalar column {config.key_column!r} (ETL_KEY_COLUMN): "
            f"set ETL_KEY_COLUMN to its unique key; columns are {', '.join(f.name for f in source.schema)}"
        )
    return source


def check_source_filter(config: Config, bq: BigQuery) -> None:
    """Dry-run the source filter over the source before anything is written; a mistake is a JobError.

    Called once the source is known to exist (or where a missing source is named first): else BigQuery's
    "not found" would be the error."""
    if config.source_filter:
        checked_dry_run(bq, f"SELECT 1 {filtered_source(config)}", "source_filter", config)


def checked_dry_run(bq: BigQuery, sql: str, config_key: str, config: Config) -> list[bigquery.SchemaField]:
    """BigQuery's check of a query (its result's columns); its mistake as a JobError naming ``config_key`` and its
    environment variable.

    With LIMIT 0, which BigQuery's dry run does not need (it reads nothing) but the local BigQuery does:
    it answers a dry run by running the query, which at 1,000,000 rows took 0.39 s instead of 0.03 s.
    """
    try:
        return bq.dry_run(f"{sql}\nLIMIT 0")
    except api_exceptions.BadRequest as exc:
        message = " ".join(str(exc.message).split("\n")[0].split())[:MAX_MESSAGE_CHARS]
        variable = ENV_NAMES[config_key]
        raise JobError(f"{variable} (config key {config_key}) is not valid for source table {config.source_table}: "
                       f"BigQuery says: {message}; fix it (nothing was written)") from None


def require_dataset(bq: BigQuery, table: TableId) -> None:
    """Raise a JobError naming the `bq mk` command unless the destination table's dataset exists."""
    if not bq.dataset_exists(table):
        dataset = f"{table.project}:{table.dataset}"
        raise JobError(
            f"dataset {dataset.replace(':', '.')} of ETL_DESTINATION_TABLE does not exist: create it "
            f"(bq mk --dataset --location=<the source's location> {dataset})"
        )
