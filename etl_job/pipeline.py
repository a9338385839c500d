"""Extract → transform → load, keyed on one column so that any rerun converges to one clean run.

How a run stays correct however it ends:

* Extract reads, in one parameterized query, only the source rows whose key is not yet in the
  destination (an anti-join), one row per key, page by page. A rerun after success therefore
  reads nothing, and a rerun after an interruption (SIGTERM, timeout, crash, SIGKILL) reads
  exactly the rest. No checkpoint is stored anywhere: the destination is the checkpoint, so it
  cannot disagree with it. One query rather than a query per page (keyset pagination) because
  BigQuery bills each query for a full scan: one scan per run instead of one per page. No ORDER
  BY: BigQuery sorts a large result on one worker, and the anti-join makes the order irrelevant.
* Nothing is dropped silently. A key shared by several source rows is processed once (an
  arbitrary one of its rows); every other row of it goes to ``<destination>_errors`` as
  "duplicate key in source". Source rows with a NULL key cannot be loaded or recorded by key:
  one COUNT query per run counts them and the run logs them. Either makes the run exit 3.
* Each batch is written with a load job into a per-run staging table (WRITE_TRUNCATE), then
  MERGEd into the destination on the key, inserting only keys not already there. A MERGE is
  atomic, so a batch lands whole or not at all, and within a run no key is written twice.
  Two runs at the same time could both insert a key: BigQuery may commit two concurrent MERGEs
  that only insert. The guard is ``overlap`` (a scheduled run skips while an older one is still
  going); it fails open, so should its check fail while another run is going, rows may be doubled.
* Memory is bounded by the batch size however large the table: one page is read and
  transformed while a background thread loads the previous batch; never more than two.
* The destination is created clustered on the key, so each MERGE reads little of it; on very
  large tables, a larger ETL_BATCH_SIZE means fewer MERGEs. Columns the transform adds are
  declared in its module's ``OUTPUT_COLUMNS``; the job creates the destination with them.
* Rows whose transform fails go to ``<destination>_errors`` and not to the destination, so the
  next run tries them again.
* On a stop (``stopping``): no new batch is started; the batches already transformed are loaded
  until the stop deadline, when BigQuery work still in flight is abandoned (and its job asked
  to cancel). Whatever did not land, the next run redoes.
* Shardable: ``Shard(index, count)`` restricts the run to a hash slice of the key space, so N
  tasks can split one table (ETL_SHARD_INDEX / ETL_SHARD_COUNT, set per task by the fan-out state
  machine; unset: ``Shard(0, 1)``). NULL keys hash to no shard; shard 0 counts them, once per run.

The model is "each source key is processed once": a source row changed after it was loaded is
not reprocessed; delete its key from the destination to have the next run redo it.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.cloud import bigquery

from etl_job import stopping
from etl_job.bigquery_io import Abandoned, BigQuery
from etl_job.config import Config, TableId
from etl_job.errors import JobError
from etl_job.logs import fields

log = logging.getLogger(__name__)

LINEAGE = (
    bigquery.SchemaField("run_id", "STRING", description="the run that wrote the row"),
    bigquery.SchemaField("processed_at", "TIMESTAMP", description="when the row was transformed and loaded"),
)
STAGING_EXPIRY = datetime.timedelta(days=1)  # BigQuery drops a staging table a killed run left behind
MAX_ERROR_CHARS = 1000
COPIES = "_etl_key_copies"  # extract column: how many source rows share the row's key

Transform = Callable[[dict], dict]


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
    rows_failed: int = 0  # rows written to the errors table: transform failures and duplicate keys
    rows_duplicate_key: int = 0  # of rows_failed: the extra rows of a key several source rows share
    rows_null_key: int = 0  # source rows with a NULL key: neither loaded nor in the errors table
    rows_abandoned: int = 0  # rows left for the next run because this one stopped
    batches: int = 0
    complete: bool = False
    seconds: float = 0.0
    timings: dict = field(default_factory=lambda: {"extract": 0.0, "transform": 0.0, "load": 0.0})


def new_run_id() -> str:
    """A sortable, unique run id, e.g. ``20240131T050000Z-1a2b3c4d``."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def extract_sql(source: TableId, destination: TableId, key: str, *, source_filter: str | None = None) -> str:
    """The extract query: one row per key of this shard not in the destination yet, with its key's row count."""
    return (
        f"SELECT s.*, COUNT(*) OVER (PARTITION BY s.`{key}`) AS {COPIES} FROM {source.sql} AS s\n"
        f"WHERE s.`{key}` IS NOT NULL\n"
        f"{filter_sql(source_filter)}"
        f"  AND NOT EXISTS (SELECT 1 FROM {destination.sql} AS d WHERE d.`{key}` = s.`{key}`)\n"
        f"  AND (@shard_count = 1 OR ABS(MOD(FARM_FINGERPRINT(CAST(s.`{key}` AS STRING)), @shard_count)) = @shard_index)\n"
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY s.`{key}`) = 1"
    )


def filter_sql(source_filter: str | None) -> str:
    """The source filter (ETL_SOURCE_FILTER) as a WHERE condition on ``s``, or nothing.

    On lines of its own, so that a ``--`` comment in it ends with it.
    """
    return f"  AND (\n{source_filter}\n)\n" if source_filter else ""


def null_keys_sql(source: TableId, key: str, *, source_filter: str | None = None) -> str:
    """How many source rows (of those the filter selects) have a NULL key (the extract cannot read them by key)."""
    return f"SELECT COUNT(*) FROM {source.sql} AS s WHERE s.`{key}` IS NULL\n{filter_sql(source_filter)}"


def merge_sql(destination: TableId, staging: TableId, key: str, columns: list[str]) -> str:
    """Insert the staged rows whose key is not in the destination yet (staging holds one row per key: see extract)."""
    names = ", ".join(f"`{column}`" for column in columns)
    values = ", ".join(f"S.`{column}`" for column in columns)
    return (
        f"MERGE {destination.sql} AS T USING {staging.sql} AS S ON T.`{key}` = S.`{key}`\n"
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def run(config: Config, bq: BigQuery, transform: Transform, stop: stopping.Stop, shard: Shard = Shard(),
        output_columns: Mapping[str, str] | None = None) -> RunResult:
    """Process every source row not yet in the destination, until done or until ``stop`` is requested.

    ``output_columns`` (name → BigQuery type) are the columns the transform adds to each row.
    """
    started = time.monotonic()
    result = RunResult(run_id=new_run_id())
    key = config.key_column
    try:
        tables = _prepare_tables(config, bq, result.run_id, output_columns or {})
    except Abandoned:
        log.warning("stop requested before the run started")
        return result
    log.info("run started", extra=fields(run_id=result.run_id, staging_table=str(tables.staging)))
    parameters = [
        bigquery.ScalarQueryParameter("shard_index", "INT64", shard.index),
        bigquery.ScalarQueryParameter("shard_count", "INT64", shard.count),
    ]
    pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="transform")
    loader = _Loader(bq, tables, result, started, stop)
    try:
        if shard.index == 0:  # a NULL key hashes to no shard: count them once
            result.rows_null_key = bq.query_value(null_keys_sql(config.source_table, key,
                                                                source_filter=config.source_filter))
        if result.rows_null_key:
            log.warning("source rows with a NULL key (ETL_KEY_COLUMN) cannot be loaded: give them a key, or remove "
                        "them from the source", extra=fields(key_column=key, rows_null_key=result.rows_null_key))
        pages = bq.query_pages(extract_sql(config.source_table, config.destination_table, key,
                                           source_filter=config.source_filter), parameters, config.batch_size)
        while not stop.is_set():
            clock = time.monotonic()
            rows = next(pages, None)
            result.timings["extract"] += time.monotonic() - clock
            if rows is None:
                result.complete = True
                break
            if not rows:
                continue
            result.rows_read += len(rows)
            clock = time.monotonic()
            batch = _transform_batch(rows, transform, pool, config.concurrency, stop, tables.columns, key)
            result.timings["transform"] += time.monotonic() - clock
            loader.submit(batch)
            rows = batch = None  # memory: only the batch loading and the next one in progress
    except Abandoned:
        pass  # a read given up on because the run is stopping
    finally:
        if stop.is_set() and not result.complete:
            log.warning("stop requested: starting no new batch, loading those already transformed",
                        extra=fields(deadline_seconds=stopping.DEADLINE_SECONDS))
        # Abandon transforms still running after a stop: their rows are not loaded, so the next run redoes them.
        pool.shutdown(wait=False, cancel_futures=True)
        loader.close()  # loads the batches already transformed (settles them) unless loading failed
        try:
            bq.delete_table(tables.staging)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
            log.warning("could not drop the staging table; it expires in a day",
                        extra=fields(staging_table=str(tables.staging), error=str(exc)[:300]))
    if loader.error:
        raise loader.error
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class _Tables:
    destination: TableId
    staging: TableId
    errors: TableId
    schema: list  # the destination's, used for staging too
    errors_schema: list
    columns: frozenset
    key: str


def _prepare_tables(config: Config, bq: BigQuery, run_id: str, output_columns: Mapping[str, str]) -> _Tables:
    """Check the source; create the destination, errors and staging tables if missing (explicit schemas).

    The destination gets the source's columns, then ``output_columns`` (those the source lacks), then
    the lineage columns.
    """
    key = config.key_column
    source = bq.get_table(config.source_table)
    if source is None:
        raise JobError(
            f"source table {config.source_table} does not exist (ETL_SOURCE_TABLE): "
            "check the name and that the service account can read it"
        )
    key_field = next((f for f in source.schema if f.name == key), None)
    if key_field is None or key_field.mode == "REPEATED" or key_field.field_type in ("RECORD", "STRUCT"):
        raise JobError(
            f"source table {config.source_table} has no scalar column {key!r} (ETL_KEY_COLUMN): "
            f"set ETL_KEY_COLUMN to its unique key; columns are {', '.join(f.name for f in source.schema)}"
        )
    lineage = {f.name for f in LINEAGE}
    added = [bigquery.SchemaField(name, kind) for name, kind in output_columns.items()
             if name not in {f.name for f in source.schema} | lineage]
    destination = bq.get_table(config.destination_table)
    if destination is None:
        if not bq.dataset_exists(config.destination_table):
            dataset = f"{config.destination_table.project}:{config.destination_table.dataset}"
            raise JobError(
                f"dataset {dataset.replace(':', '.')} of ETL_DESTINATION_TABLE does not exist: create it "
                f"(bq mk --dataset --location=<the source's location> {dataset})"
            )
        schema = [f for f in source.schema if f.name not in lineage] + added + list(LINEAGE)
        destination = bq.create_table(config.destination_table, schema, clustering=[key])
        log.info("created destination table", extra=fields(table=str(config.destination_table)))
    missing_output = [f for f in added if f.name not in {d.name for d in destination.schema}]
    if missing_output:
        columns = ", ".join(f"ADD COLUMN `{f.name}` {f.field_type}" for f in missing_output)
        raise JobError(
            f"destination table {config.destination_table} lacks the transform's OUTPUT_COLUMNS "
            f"{[f.name for f in missing_output]}: add them (ALTER TABLE {config.destination_table.sql} {columns}; "
            "rows loaded before hold NULL there) or drop the table and let the job create it"
        )
    missing = ({key} | lineage) - {f.name for f in destination.schema}
    if missing:
        raise JobError(
            f"destination table {config.destination_table} lacks columns {sorted(missing)}: add them "
            "(run_id STRING, processed_at TIMESTAMP) or drop the table and let the job create it"
        )
    errors_schema = [
        bigquery.SchemaField(key, key_field.field_type),
        bigquery.SchemaField("error", "STRING"),
        bigquery.SchemaField("run_id", "STRING"),
        bigquery.SchemaField("failed_at", "TIMESTAMP"),
    ]
    bq.create_table(config.errors_table, errors_schema)
    staging = config.destination_table.sibling(f"{config.destination_table.table}_staging_{run_id.replace('-', '_')}")
    expires = datetime.datetime.now(datetime.UTC) + STAGING_EXPIRY
    bq.create_table(staging, destination.schema, expires=expires)
    return _Tables(
        destination=config.destination_table,
        staging=staging,
        errors=config.errors_table,
        schema=destination.schema,
        errors_schema=errors_schema,
        columns=frozenset(f.name for f in destination.schema),
        key=key,
    )


@dataclass
class _Batch:
    loaded: list = field(default_factory=list)  # transformed rows
    failed: list = field(default_factory=list)  # (key, error message)
    duplicates: int = 0  # of failed: extra source rows of a duplicated key
    abandoned: int = 0  # rows not transformed because the run is stopping


def _transform_batch(rows: list[dict], transform: Transform, pool: ThreadPoolExecutor, concurrency: int,
                     stop: stopping.Stop, columns: frozenset, key: str) -> _Batch:
    """Run the transform over the rows on up to ``concurrency`` threads; sort results into loaded and failed.

    Each worker takes the next row from a shared iterator until none is left or a stop is
    requested (one task per worker, not per row: per-row tasks cost more than a cheap transform).
    The other source rows of a duplicated key are recorded as failed.
    """
    copies = [row.pop(COPIES, 1) for row in rows]
    keys = [row[key] for row in rows]  # as read: a transform may modify its row in place
    results: list = [None] * len(rows)
    todo = iter(range(len(rows)))
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            with lock:
                index = next(todo, None)
            if index is None:
                return
            results[index] = _apply(transform, rows[index], keys[index], columns, key)

    workers = [pool.submit(work) for _ in range(min(concurrency, len(rows)))]
    while not all(worker.done() for worker in workers):
        if stop.past(stopping.SETTLE_SECONDS):
            log.warning("abandoning transforms still running after the stop",
                        extra=fields(seconds=stopping.SETTLE_SECONDS))
            break
        futures.wait(workers, timeout=0.2)
    batch = _Batch()
    for key_value, outcome, count in zip(keys, list(results), copies):
        if outcome is None:
            batch.abandoned += 1
            continue
        if isinstance(outcome, str):
            batch.failed.append((key_value, outcome))
        else:
            batch.loaded.append(outcome)
        if count > 1:
            message = f"duplicate key in source: {count} source rows have this key; one of them was processed"
            batch.failed += [(key_value, message)] * (count - 1)
            batch.duplicates += count - 1
    return batch


def _apply(transform: Transform, row: dict, key_value, columns: frozenset, key: str):
    """The transformed row, or an error message if the transform raised or returned something unloadable."""
    try:
        out = transform(row)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a row error
        return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or "error"
    if not isinstance(out, dict):
        return f"transform returned {type(out).__name__}, expected a dict"
    if out.get(key) != key_value:
        return f"transform changed the key column {key!r}; keep it unchanged"
    unknown = out.keys() - columns
    if unknown:
        return (f"transform returned columns the destination lacks: {sorted(unknown)}; "
                "declare new columns in the transform module's OUTPUT_COLUMNS")
    return out


class _Loader:
    """Loads batches one at a time on a background thread while the main thread reads and transforms the next.

    ``submit`` first waits for the previous load to end, so at most two batches are in memory.
    """

    def __init__(self, bq: BigQuery, tables: _Tables, result: RunResult, started: float, stop: stopping.Stop) -> None:
        self._bq, self._tables, self._result, self._started, self._stop = bq, tables, result, started, stop
        self._queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        """Hand over a batch once the previous one is loaded; raise if loading has failed."""
        self._queue.join()
        if self.error is not None:
            raise self.error
        self._queue.put(batch)

    def close(self) -> None:
        """Finish the batch handed over (settle it, until the stop deadline), then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self.error is None:
                    self._load(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc
            finally:
                self._queue.task_done()

    def _load(self, batch: _Batch) -> None:
        result, tables, key = self._result, self._tables, self._tables.key
        clock = time.monotonic()
        now = datetime.datetime.now(datetime.UTC).isoformat()
        result.rows_abandoned += batch.abandoned
        unsettled = len(batch.loaded) + len(batch.failed)
        try:
            if unsettled and self._stop.past(stopping.DEADLINE_SECONDS):
                raise Abandoned("the stop deadline has passed")
            if batch.loaded:
                for row in batch.loaded:  # in place: one copy of the batch fewer in memory
                    row.update(run_id=result.run_id, processed_at=now)
                self._bq.load_rows(batch.loaded, tables.staging, tables.schema, write_disposition="WRITE_TRUNCATE")
                changed = self._bq.run_dml(merge_sql(tables.destination, tables.staging, key,
                                                     [f.name for f in tables.schema]))
                result.rows_loaded += len(batch.loaded) if changed is None else changed
                unsettled -= len(batch.loaded)
            if batch.failed:
                errors = [{key: k, "error": message, "run_id": result.run_id, "failed_at": now}
                          for k, message in batch.failed]
                self._bq.load_rows(errors, tables.errors, tables.errors_schema, write_disposition="WRITE_APPEND")
                result.rows_failed += len(batch.failed)
                result.rows_duplicate_key += batch.duplicates
                unsettled = 0
        except Abandoned:
            # A load or MERGE given up on either committed or not: the next run redoes whatever is missing.
            result.rows_abandoned += unsettled
            log.warning("gave up on the batch in flight at the stop deadline; the next run redoes what did not land",
                        extra=fields(rows_abandoned=unsettled, deadline_seconds=stopping.DEADLINE_SECONDS))
            return
        finally:
            result.timings["load"] += time.monotonic() - clock
        result.batches += 1
        log.info("batch loaded", extra=fields(
            batch=result.batches, rows_loaded=result.rows_loaded, rows_failed=result.rows_failed,
            rows_per_second=round(result.rows_loaded / (time.monotonic() - self._started), 1),
        ))
