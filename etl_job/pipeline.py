"""Extract → transform → load, keyed on one column so that any rerun converges to one clean run.

How a run stays correct however it ends:

* Extract reads, in one query, only the source rows whose key is not yet in the
  destination (an anti-join), one row per key, page by page. A rerun after success therefore
  reads nothing, and a rerun after an interruption (SIGTERM, timeout, crash, SIGKILL) reads
  exactly the rest. A first run, with nothing in the destination yet, reads the source as it is
  instead, once one cheap query finds every key in it once (``_extract``, which names the one
  case that query cannot see). No checkpoint is stored anywhere: the destination is the
  checkpoint, so it cannot disagree with it. One query rather than a query per page (keyset pagination) because
  BigQuery bills each query for a full scan: one scan per run instead of one per page. No ORDER
  BY: BigQuery sorts a large result on one worker, and the anti-join makes the order irrelevant.
* Nothing is dropped silently. A key shared by several source rows is processed once (an
  arbitrary one of its rows); every other row of it goes to ``<destination>_errors`` as
  "duplicate key in source". Source rows with a NULL key cannot be loaded or recorded by key:
  one COUNT query per run counts them (none when the key column is REQUIRED) and the run logs
  them. Either makes the run exit 3.
* Transformed batches are gathered as one Parquet file in memory; at LOAD_BYTES of it, after
  LOAD_SECONDS, or at the end, it is written with a load job into a per-run staging table
  (WRITE_TRUNCATE), then inserted into the destination by one INSERT of only the keys not already
  there (``insert_sql``), on a thread of its own while the next rows are gathered (one load at a
  time). A DML statement is atomic, so whole batches land together or not at all, and within a run
  no key is written twice.
  Two runs at the same time could both insert a key: BigQuery may commit two concurrent INSERTs.
  The guard is ``overlap`` (a scheduled run skips while an older one is still going); it fails
  open, so should its check fail while another run is going, rows may be doubled.
* Memory is bounded by the batch size and LOAD_BYTES however large the table: one batch is read and
  transformed while a background thread gathers (or loads) the previous one; never more than two,
  plus the gathered Parquet and one Storage Read message received ahead.
* The destination is created clustered on the key, so each INSERT reads little of it. Columns the transform adds are
  declared in its module's ``OUTPUT_COLUMNS``; the job creates the destination with them.
* Rows whose transform fails, and rows with a value that would not load into its column (checked
  in the job against the destination's schema before anything is sent), go to
  ``<destination>_errors`` with the column, the reason and an excerpt of the value, and not to the
  destination, so the next run tries them again; the rest of their batch loads. Should a load job
  still reject the gathered rows for a row's fault (BadRequest), they are split in halves until the
  row is found (at most ``MAX_REJECTED_PER_BATCH`` rows a load; beyond that the fault is not the rows').
* Rows the transform skips (it returns ``etl_job.SKIP``) have their key recorded in
  ``<destination>_skipped``; the extract leaves those keys out, so they are not read again.
* Before anything is written, the source filter is dry-run over the source, and the source, the
  transform's declared output (``OUTPUT_COLUMNS``) and an existing destination are compared
  (``schema.mismatches``): a missing column, a narrower type or a source column named like a
  lineage column stops the run with the fix.
* JSON and BYTES columns travel as text (JSON text, base64) into STRING staging columns and are
  turned back by the INSERT (PARSE_JSON, FROM_BASE64), so a JSON null stays a JSON null (a JSON
  load reads ``null`` as SQL NULL) and bytes arrive byte for byte. FLOAT64 NaN and infinities go as
  the strings BigQuery's JSON loader reads (``bigquery_io.to_json``).
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
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery

from etl_job import SKIP, arrow_io, arrow_transform, is_batch_transform, runs, schema, stopping
from etl_job.bigquery_io import Abandoned, BigQuery
from etl_job.config import Config, TableId
from etl_job.errors import MAX_ERROR_CHARS, JobError
from etl_job.logs import fields
from etl_job.runs import LINEAGE, RunResult, Shard, check_source_filter, new_run_id, require_dataset

log = logging.getLogger(__name__)

STAGING_EXPIRY = datetime.timedelta(days=1)  # BigQuery drops a staging table a killed run left behind
MAX_REJECTED_PER_BATCH = 10  # rows a load job may reject (one load) before the run fails (not the rows' fault)
COPIES = "_etl_key_copies"  # extract column: how many source rows share the row's key
# The extract and load on the BigQuery Storage Read API (Arrow) and Parquet load jobs. False: today's
# algorithm before them, REST query pages and JSON load jobs, kept only as `make bench`'s "rest" variant.
STORAGE_API = True
READ_AS_IT_IS = "a first run: reading the source as it is (each key once)"  # logged by _extract, which says why
EXTRACTED = ("not reading the source as it is: it holds a key more than once, or the destination or the skipped "
             "table holds rows; extracting the rows still to process")
# Transformed batches are gathered, compressed, into one Parquet load and one INSERT of up to this many bytes:
# a load job and an INSERT cost about a tenth of a second each on the local BigQuery, seconds on BigQuery,
# whatever their size (and BigQuery allows 1,500 load jobs per table a day). They run on a thread of their
# own while the next rows are read, transformed and gathered. Memory: two batches of rows, plus at most twice
# this (one load in flight, the next gathering), plus a Parquet row group of Arrow (Parquet.ROW_GROUP_BYTES).
LOAD_BYTES = 32 * 1024 * 1024
# ... or once the oldest gathered row has waited this long, so that a slow run (an API call per row) lands its rows
# as it goes and a kill loses at most this much work; with 60 s, one staging table takes at most 1,440 load jobs a day.
LOAD_SECONDS = 60.0

# A batch's load fails for a row's fault: BigQuery rejects it, or (Parquet) Arrow cannot hold a value.
_ROW_FAULTS = (api_exceptions.BadRequest, *arrow_io.CONVERSION_ERRORS)
_REJECTED = ("BigQuery rejected the row: ", "the row's values do not convert to its columns' types: ")

Row = dict[str, Any]  # a row as the transform sees it: column → value
Failure = tuple[Any, "str | None", str, "str | None"]  # (key, column or None, error message, value excerpt or None)
Unit = Any  # what one staging load writes: rows (today's JSON load), or arrow_io.Parquet or a pyarrow Table (a part of one)
Transform = Callable[[Any], object]  # the row form (a Row) or the batch form (a pyarrow Table: arrow_transform)


def extract_sql(config: Config, shard: Shard, skipped: TableId | None, json_columns: Iterable[str] = ()) -> str:
    """The extract query: one row per key still to process (``runs.pending_sql``), with its key's row count.

    JSON columns are read as their JSON text, so that a JSON null is told apart from SQL NULL.
    """
    replace = ", ".join(f"IF(s.`{c}` IS NULL, NULL, TO_JSON_STRING(s.`{c}`)) AS `{c}`" for c in json_columns)
    columns = f"s.* REPLACE ({replace})" if replace else "s.*"
    key = config.key_column
    return (f"SELECT {columns}, COUNT(*) OVER (PARTITION BY s.`{key}`) AS {COPIES}\n"
            f"{runs.pending_sql(config, shard, skipped, one_per_key=True)}")


def first_run_sql(source: TableId, key: str, *written: TableId) -> str:
    """Whether every source row is still to process, once: each has a key no other row has, and none of the
    ``written`` tables (the destination, the skipped keys) holds a row yet."""
    empty = "".join(f"\n  AND NOT EXISTS (SELECT 1 FROM {table.sql})" for table in written)
    return f"SELECT COUNT(*) = COUNT(DISTINCT s.`{key}`){empty}\nFROM {source.sql} AS s"


def null_keys_sql(config: Config) -> str:
    """How many source rows (of those the filter selects) have a NULL key (the extract cannot read them by key)."""
    return f"SELECT COUNT(*) {runs.filtered_source(config)}  AND s.`{config.key_column}` IS NULL"


def insert_sql(destination: TableId, staging: TableId, key: str, columns: list[str], *,
               json_columns: Iterable[str] = (), bytes_columns: Iterable[str] = ()) -> str:
    """Insert the staged rows whose key is not in the destination yet (staging holds one row per key: see extract).

    One INSERT, not a MERGE: as atomic, and BigQuery runs more INSERTs into a table at once (all of a day's
    first 1,500, then 10 with 100 queued) than MERGEs (2, with 20 queued and the rest failed), so the shards
    of a fanned-out run queue less behind each other's loads (BigQuery docs, "DML concurrency"). On the local
    BigQuery it is faster too: 0.11 s against 0.14-0.19 s for 1,000,000 rows.
    JSON and BYTES columns are staged as text (JSON text, base64) and converted back here.
    """
    convert = {**{c: "PARSE_JSON" for c in json_columns}, **{c: "FROM_BASE64" for c in bytes_columns}}
    names = ", ".join(f"`{column}`" for column in columns)
    values = ", ".join(f"{convert[c]}(S.`{c}`)" if c in convert else f"S.`{c}`" for c in columns)
    return (
        f"INSERT INTO {destination.sql} ({names})\n"
        f"SELECT {values} FROM {staging.sql} AS S\n"
        f"WHERE {runs.key_not_in(destination, key, row='S', alias='T')}"
    )


def run(config: Config, bq: BigQuery, transform: Transform, stop: stopping.Stop, shard: Shard = Shard(),
        output_columns: list[bigquery.SchemaField] | None = None) -> RunResult:
    """Process every source row not yet in the destination, until done or until ``stop`` is requested.

    ``output_columns`` are the columns the transform adds to each row, or source columns it retypes.
    """
    if is_batch_transform(transform) and not STORAGE_API:
        raise JobError("the batch form needs the Storage Read API path (pipeline.STORAGE_API)")
    arrow_io.use_system_allocator()
    started = time.monotonic()
    result = RunResult(run_id=new_run_id())
    try:
        tables = _prepare_tables(config, bq, result.run_id, output_columns or [])
    except Abandoned:
        log.warning("stop requested before the run started")
        return result
    log.info("run started", extra=fields(run_id=result.run_id, staging_table=str(tables.staging)))
    pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="transform")
    loader = _Loader(bq, tables, result, started, stop)
    try:
        _count_null_keys(config, bq, shard, tables, result)
        # No anti-join against an empty skipped table (it costs a third of the extract on a local BigQuery);
        # keys another run skips meanwhile are merely read and skipped again.
        sql = extract_sql(config, shard, tables.skipped if tables.any_skipped else None, tables.json_columns)
        pages = _extract(bq, tables, sql, config.batch_size, as_it_is=_may_read_as_it_is(config, shard, tables, result))
        while not stop.is_set() and _next_batch(pages, transform, pool, config, stop, tables, result, loader):
            pass
    except Abandoned:
        pass  # a read given up on because the run is stopping
    finally:
        if stop.is_set() and not result.complete:
            log.warning("stop requested: starting no new batch, loading those already transformed",
                        extra=fields(deadline_seconds=stopping.DEADLINE_SECONDS))
        # Abandon transforms still running after a stop: their rows are not loaded, so the next run redoes them.
        pool.shutdown(wait=False, cancel_futures=True)
        loader.close()  # loads the batches already transformed (settles them) unless loading failed
        result.complete = result.complete and not result.rows_abandoned  # the last load given up on at a stop
        _drop(bq, tables.staging, tables.extract)
    if loader.error:
        raise loader.error
    result.seconds = time.monotonic() - started
    return result


def _next_batch(pages: Iterator[Any], transform: Transform, pool: ThreadPoolExecutor, config: Config,
                stop: stopping.Stop, tables: _Tables, result: RunResult, loader: _Loader) -> bool:
    """Read, transform and hand over the next batch; False (and the result complete) once the extract is read."""
    clock = time.monotonic()
    rows = next(pages, None)
    result.timings["extract"] += time.monotonic() - clock
    if rows is None:
        result.complete = True
        return False
    if len(rows):
        result.rows_read += len(rows)
        clock = time.monotonic()
        if is_batch_transform(transform):
            batch = _transform_table(rows, transform, pool, stop, tables)
        else:
            rows = arrow_io.to_rows(rows) if isinstance(rows, pa.Table) else rows
            _parse_json_columns(rows, tables.json_columns)
            batch = _transform_batch(rows, transform, pool, config.concurrency, stop, tables)
        result.timings["transform"] += time.monotonic() - clock
        loader.submit(batch)  # memory: only the batch loading and the next one in progress
    return True


def _count_null_keys(config: Config, bq: BigQuery, shard: Shard, tables: _Tables, result: RunResult) -> None:
    # A NULL key hashes to no shard: shard 0 counts them. A REQUIRED key column has none: no query.
    if shard.index == 0 and tables.key_nullable:
        result.rows_null_key = bq.query_value(null_keys_sql(config))
    if result.rows_null_key:
        log.warning("source rows with a NULL key (ETL_KEY_COLUMN) cannot be loaded: give them a key, or remove "
                    "them from the source", extra=fields(key_column=config.key_column,
                                                         rows_null_key=result.rows_null_key))


def _may_read_as_it_is(config: Config, shard: Shard, tables: _Tables, result: RunResult) -> bool:
    """Whether the source may be read as it is (``_extract``): a first run, as far as the tables' metadata tells
    (nothing in the destination or skipped yet), of the whole source (no filter, one shard) with no NULL key (counted
    before) and no JSON column (the extract reads those as their JSON text), when the Storage Read API may read the
    source (``_Tables.source_readable``)."""
    return (tables.source_readable and tables.destination_empty and not tables.any_skipped
            and not config.source_filter and shard.count == 1 and not result.rows_null_key and not tables.json_columns)


def _extract(bq: BigQuery, tables: _Tables, sql: str, batch_size: int, *, as_it_is: bool) -> Iterator[Any]:
    """The extract's rows, a batch at a time: pyarrow Tables (the Storage Read API), or rows (today's algorithm).

    The Storage Read API reads tables, not queries: the extract query (anti-join, filter, shard) is
    first written into a table of its own (which expires in a day should the run be killed), then
    read with several streams in parallel. One scan of the source, as before; the destination is
    still the only checkpoint.

    Given ``as_it_is`` (``_may_read_as_it_is``), the source itself is read instead, as long as one query
    (``first_run_sql``) finds every key in it once and the destination and the skipped table still empty
    (the metadata may lag: a local BigQuery's row count leaves out what DML wrote). Then no copy of the
    source is written: at 1,000,000 rows on the local BigQuery, 0.06 s for that query against 0.23 s for
    the extract table. The query runs once the read session is open, and a session reads its table as it
    was when it opened (``ReadSession.TableModifiers.snapshot_time``: "if not set, interpreted as now"),
    so a duplicate appended meanwhile is counted though not read: it sends the run to the extract as well.
    What the query cannot see is a duplicate deleted from the source in that moment, between the two: its
    key would be loaded twice (or, in two loads, the second copy left out unrecorded). Pinning both to one time
    (the session's ``snapshot_time``, the query's ``FOR SYSTEM_TIME AS OF``) would close that; a local BigQuery
    keeps no time travel (``dev.local_bigquery``), so it could not be tested here.
    """
    if not STORAGE_API:
        yield from bq.query_pages(sql, batch_size)
        return
    if as_it_is:
        batches = bq.read_table(tables.source, list(tables.read_columns), batch_size)
        try:
            first = next(batches, None)  # the session is open: what it reads is settled
            unique = bq.query_value(first_run_sql(tables.source, tables.key, tables.destination, tables.skipped))
        except BaseException:
            batches.close()
            raise
        if unique:
            log.info(READ_AS_IT_IS)
            if first is not None:
                yield first
            del first  # not held once handed over: memory stays bounded by the batches in progress
            yield from batches
            return
        del first
        batches.close()
        log.info(EXTRACTED)
    bq.materialize(sql, tables.extract, expires=datetime.datetime.now(datetime.UTC) + STAGING_EXPIRY)
    yield from bq.read_table(tables.extract, [*tables.read_columns, COPIES], batch_size)


def _drop(bq: BigQuery, *names: TableId) -> None:
    """Drop the run's own tables (each expires in a day should this fail or the run be killed)."""
    for table in names:
        try:
            bq.delete_table(table)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
            log.warning("could not drop the run's table; it expires in a day",
                        extra=fields(table=str(table), error=str(exc)[:300]))


@dataclass(frozen=True)
class _Tables:
    source: TableId
    # A table (not a view: the Storage Read API does not run its query) that the Storage Read API may read whole
    # however large it is: no larger than max_bytes_billed, which caps what an extract query of it would bill.
    source_readable: bool
    destination: TableId
    destination_empty: bool  # at start: whether the destination held no row (a first run)
    staging: TableId
    extract: TableId  # the extract query's result, read with the Storage Read API
    read_columns: tuple[str, ...]  # the source's columns: the projection of that read
    errors: TableId
    skipped: TableId
    schema: list[bigquery.SchemaField]  # the destination's
    staging_schema: list[bigquery.SchemaField]  # the destination's, with top-level JSON and BYTES columns as STRING (see insert_sql)
    staging_arrow: pa.Schema  # the staging schema in Arrow: what a Parquet load of it holds
    errors_schema: list[bigquery.SchemaField]
    skipped_schema: list[bigquery.SchemaField]
    any_skipped: bool  # whether the skipped table held rows at start
    checks: dict[str, Callable[[object], tuple[str, str] | None]]  # column → value check (schema.value_check), lineage columns excepted
    json_columns: tuple[str, ...]  # top-level, non-repeated JSON columns of the source (read as JSON text)
    staged_json: tuple[str, ...]  # destination columns staged as JSON text (see insert_sql)
    staged_bytes: tuple[str, ...]  # destination columns staged as base64 text
    target: arrow_transform.Target  # what the batch form's rows must fit (the staging columns but lineage)
    key: str
    key_nullable: bool  # whether the source's key column may hold NULL (is not REQUIRED)


def _prepare_tables(config: Config, bq: BigQuery, run_id: str, output: list[bigquery.SchemaField]) -> _Tables:
    """Check the source, its filter, the declared output and an existing destination; create what is missing
    (explicit schemas).

    The destination gets the source's columns (retyped where ``output`` redeclares one), then the
    other ``output`` columns, then the lineage columns. Nothing is written unless all of them agree.
    """
    key = config.key_column
    source_table, destination = _checked_source_and_destination(config, bq)
    source = list(source_table.schema)
    key_field = next(f for f in source if f.name == key)
    destination = _fitting_destination(config, bq, schema.destination_schema(source, output, LINEAGE), destination)
    errors_schema = _errors_schema(key_field)
    _ensure_table(bq, config.errors_table, errors_schema)
    skipped = config.skipped_table
    skipped_schema = [bigquery.SchemaField(key, key_field.field_type), bigquery.SchemaField("run_id", "STRING"),
                      bigquery.SchemaField("skipped_at", "TIMESTAMP")]
    skipped_rows = _ensure_table(bq, skipped, skipped_schema).num_rows
    suffix = run_id.replace('-', '_')
    staging = config.destination_table.sibling(f"{config.destination_table.table}_staging_{suffix}")
    staging_schema = [_staged(f) for f in destination.schema]
    bq.create_table(staging, staging_schema, expires=datetime.datetime.now(datetime.UTC) + STAGING_EXPIRY)
    lineage = {f.name for f in LINEAGE}
    staged_json, staging_arrow = _staged_as(destination.schema, "JSON"), arrow_io.arrow_schema(staging_schema)
    return _Tables(
        source=config.source_table, destination=config.destination_table, staging=staging,
        destination_empty=destination.num_rows == 0 and destination.streaming_buffer is None,
        source_readable=source_table.table_type == "TABLE" and (
            config.max_bytes_billed is None or (source_table.num_bytes or 0) <= config.max_bytes_billed),
        errors=config.errors_table, skipped=skipped,
        extract=config.destination_table.sibling(f"{config.destination_table.table}_extract_{suffix}"),
        read_columns=tuple(f.name for f in source),
        schema=destination.schema, staging_schema=staging_schema, staging_arrow=staging_arrow,
        errors_schema=errors_schema,
        skipped_schema=skipped_schema, any_skipped=skipped_rows is None or skipped_rows > 0,
        checks=schema.row_checks(f for f in destination.schema if f.name not in lineage),
        json_columns=tuple(f.name for f in source if f.mode != "REPEATED" and schema.standard(f.field_type) == "JSON"),
        staged_json=staged_json, staged_bytes=_staged_as(destination.schema, "BYTES"),
        target=arrow_transform.Target(
            schema=pa.schema([f for f in staging_arrow if f.name not in lineage]), key=key,
            required=frozenset(f.name for f in staging_schema if f.mode == "REQUIRED"), json=frozenset(staged_json)),
        key=key, key_nullable=key_field.mode != "REQUIRED",
    )


def _fitting_destination(config: Config, bq: BigQuery, expected: list[bigquery.SchemaField],
                         destination: bigquery.Table | None) -> bigquery.Table:
    """The destination, once it is known to fit the ``expected`` columns; created with them if it does not exist."""
    if destination is not None:
        problems = schema.mismatches(expected, destination.schema, config.destination_table.sql, config.key_column)
        if problems:
            raise JobError(f"destination table {config.destination_table} (ETL_DESTINATION_TABLE) does not fit what "
                           f"the job writes: {'; '.join(problems)}; or drop the table and let the job create it")
        return destination
    require_dataset(bq, config.destination_table)
    created = bq.create_table(config.destination_table, expected, clustering=[config.key_column])
    log.info("created destination table", extra=fields(table=str(config.destination_table)))
    return created


def _checked_source_and_destination(config: Config, bq: BigQuery) -> tuple[bigquery.Table, bigquery.Table | None]:
    """The source, checked with its filter, and the destination if it exists: read at once."""
    with ThreadPoolExecutor(1, thread_name_prefix="check") as reads:  # an independent round trip
        destination = reads.submit(bq.get_table, config.destination_table)
        source = _checked_source(config, bq)  # a missing source is named first, as on the SQL path
        check_source_filter(config, bq)
        return source, destination.result()


def _errors_schema(key: bigquery.SchemaField) -> list[bigquery.SchemaField]:
    return [
        bigquery.SchemaField(key.name, key.field_type, description="the source row's key"),
        bigquery.SchemaField("error", "STRING", description="why the row is not in the destination"),
        bigquery.SchemaField("run_id", "STRING"),
        bigquery.SchemaField("failed_at", "TIMESTAMP"),
        bigquery.SchemaField("column", "STRING", description="the column whose value would not load, if one"),
        bigquery.SchemaField("value", "STRING", description="that value, or the start of it"),
    ]


def _checked_source(config: Config, bq: BigQuery) -> bigquery.Table:
    """The source (``runs.checked_source``), once it is known to have no column named like one the job writes: a
    lineage column, or the extract's count of a key's rows (COPIES)."""
    source = runs.checked_source(config, bq)
    clashes = [f.name for f in source.schema if f.name in {*(f.name for f in LINEAGE), COPIES}]
    if clashes:
        renamed = ", ".join(f"{c} AS source_{c}" for c in clashes)
        raise JobError(
            f"source table {config.source_table} has columns {clashes}, which the job writes itself (the run that "
            f"wrote each row, and when; how many source rows share a key): read the source through a view that "
            f"renames them, e.g. CREATE VIEW <dataset>.source_view AS SELECT * EXCEPT ({', '.join(clashes)}), {renamed} FROM "
            f"{config.source_table.sql}, and set ETL_SOURCE_TABLE (source_table) to it"
        )
    return source


def _staged(field: bigquery.SchemaField) -> bigquery.SchemaField:
    """How a destination column travels in the staging table (see insert_sql); Parquet carries BYTES as they are."""
    as_text = ("JSON",) if STORAGE_API else ("JSON", "BYTES")
    if field.mode != "REPEATED" and schema.standard(field.field_type) in as_text:
        return bigquery.SchemaField(field.name, "STRING", mode=field.mode)
    return field


def _staged_as(fields: list[bigquery.SchemaField], kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields if schema.standard(f.field_type) == kind and _staged(f) is not f)


def _ensure_table(bq: BigQuery, table: TableId, fields: list[bigquery.SchemaField]) -> bigquery.Table:
    """Create the table, or add the columns an older version of the job did not give it; return it."""
    existing = bq.create_table(table, fields)
    missing = [f for f in fields if f.name not in {e.name for e in existing.schema}]
    if missing:
        return bq.add_columns(existing, [bigquery.SchemaField(f.name, f.field_type, description=f.description)
                                         for f in missing])
    return existing


def _parse_json_columns(rows: list[Row], columns: tuple[str, ...]) -> None:
    """Turn the JSON text the extract read into Python values, in place; a JSON null becomes JSON_NULL."""
    for row in rows:
        for column in columns:
            text = row.get(column)
            if text is not None:
                row[column] = arrow_transform.json_value(text)


@dataclass
class _Batch:
    loaded: list[Row] = field(default_factory=list)  # transformed rows
    checked: list[pa.Table] = field(default_factory=list)  # rows the batch form transformed, checked by column
    failed: list[Failure] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)  # keys of the rows the transform skipped
    duplicates: int = 0  # of failed: extra source rows of a duplicated key
    abandoned: int = 0  # rows not transformed because the run is stopping
    checked_by_row: int = 0  # rows of the batch form its column checks did not pass, checked as the row form's
    final: bool = False  # the run's end: load what is gathered


@dataclass(frozen=True)
class _Rejected:
    column: str | None
    error: str
    value: str | None = None


def _transform_batch(rows: list[Row], transform: Transform, pool: ThreadPoolExecutor, concurrency: int,
                     stop: stopping.Stop, tables: _Tables) -> _Batch:
    """Run the transform over the rows on up to ``concurrency`` threads; sort results into loaded, failed, skipped.

    Each worker takes the next few rows from a shared iterator until none are left or a stop is
    requested (one task per worker, not per row, and a few rows per turn: per-row tasks and turns
    cost more than a cheap transform; eight turns per worker keep a slow transform's workers busy).
    The other source rows of a duplicated key are recorded as failed.
    """
    key = tables.key
    copies = [row.pop(COPIES, 1) for row in rows]
    keys = [row[key] for row in rows]  # as read: a transform may modify its row in place
    results: list[object] = [None] * len(rows)
    step = max(1, len(rows) // (8 * concurrency))
    todo = iter(range(0, len(rows), step))
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            with lock:
                start = next(todo, None)
            if start is None:
                return
            for index in range(start, min(start + step, len(rows))):
                if stop.is_set():
                    return
                results[index] = _apply(transform, rows[index], keys[index], tables)

    _settle([pool.submit(work) for _ in range(min(concurrency, len(rows)))], stop)
    return _sorted(keys, list(results), copies)


def _settle(workers: list[futures.Future[Any]], stop: stopping.Stop) -> bool:
    """Wait for the transform's workers; False if they are abandoned, still running SETTLE_SECONDS after a stop."""
    while not all(worker.done() for worker in workers):
        if stop.past(stopping.SETTLE_SECONDS):
            log.warning("abandoning transforms still running after the stop",
                        extra=fields(seconds=stopping.SETTLE_SECONDS))
            return False
        futures.wait(workers, timeout=0.2)
    return True


def _transform_table(table: pa.Table, transform: Transform, pool: ThreadPoolExecutor, stop: stopping.Stop,
                     tables: _Tables) -> _Batch:
    """Run the batch form over the rows (``arrow_transform``); the rows it could not check by column, check by row.

    One call on a worker thread, so that a stop can abandon it as it abandons the row form's workers.
    """
    source = table.drop_columns([COPIES]) if COPIES in table.column_names else table
    work = pool.submit(arrow_transform.apply, transform, source, tables.target)
    if not _settle([work], stop):
        return _Batch(abandoned=source.num_rows)
    applied = work.result()
    batch = _Batch(checked=applied.checked, skipped=applied.skipped,
                   failed=[(key_value, None, error, None) for key_value, error in applied.rejected])
    for merged, keys in applied.unchecked:
        batch.checked_by_row += len(keys)
        try:
            rows = arrow_io.to_rows(merged)
        except arrow_io.CONVERSION_ERRORS as exc:  # e.g. nanoseconds that a Python datetime cannot hold
            reason = f"the batch transform's values do not convert to Python values: {exc}"[:MAX_ERROR_CHARS]
            batch.failed += [(key_value, None, reason, None) for key_value in keys]
            continue
        for row, key_value in zip(rows, keys):
            outcome = _check_row(row, key_value, tables)
            if isinstance(outcome, _Rejected):
                batch.failed.append((key_value, outcome.column, outcome.error, outcome.value))
            else:
                batch.loaded.append(row)
    for key_value, count in _shared_keys(table, tables.key):
        _count_duplicates(batch, key_value, count)
    return batch


def _shared_keys(table: pa.Table, key: str) -> Iterator[tuple[Any, int]]:
    """The keys that several source rows share, with how many: none when the source was read as it is (_extract)."""
    if COPIES not in table.column_names:
        return
    copies = table[COPIES]
    repeated = pc.greater(copies, 1)
    if pc.any(repeated).as_py():  # only the key column filtered, and only when a key is duplicated
        yield from zip(table[key].filter(repeated).to_pylist(), copies.filter(repeated).to_pylist())


def _check_row(row: Row, key_value: object, tables: _Tables) -> object:
    """A batch form's row that failed the column checks, checked as the row form's (JSON text parsed first)."""
    for column in tables.staged_json:
        text = row.get(column)
        try:
            row[column] = text if text is None else arrow_transform.json_value(text)
        except (TypeError, ValueError):
            return _Rejected(column, f"value does not fit column {column}: expected JSON text BigQuery takes (no "
                                     "NaN, Infinity or number beyond a double)", schema.excerpt(text))
    return _apply(_unchanged, row, key_value, tables)


def _unchanged(row: Row) -> Row:
    return row


def _sorted(keys: list[Any], results: list[object], copies: list[int]) -> _Batch:
    """The transform's results as a batch: rows to load, failed (with a duplicated key's other rows), skipped."""
    batch = _Batch()
    for key_value, outcome, count in zip(keys, results, copies):
        if outcome is None:
            batch.abandoned += 1
            continue
        if outcome is SKIP:
            batch.skipped.append(key_value)
        elif isinstance(outcome, _Rejected):
            batch.failed.append((key_value, outcome.column, outcome.error, outcome.value))
        elif isinstance(outcome, dict):  # the row to load
            batch.loaded.append(outcome)
        _count_duplicates(batch, key_value, count)
    return batch


def _count_duplicates(batch: _Batch, key_value: object, count: int) -> None:
    """Record the other source rows of a key that ``count`` source rows share as failed."""
    if count > 1:
        message = f"duplicate key in source: {count} source rows have this key; one of them was processed"
        batch.failed += [(key_value, None, message, None)] * (count - 1)
        batch.duplicates += count - 1


def _apply(transform: Transform, row: Row, key_value: object, tables: _Tables) -> object:
    """The row to load (the transform's result merged over the source row), SKIP, or why the row is rejected."""
    key = tables.key
    try:
        out = transform(row)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a row error
        return _Rejected(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or "error")
    if out is SKIP:
        return SKIP
    if not isinstance(out, dict):
        return _Rejected(None, f"transform returned {type(out).__name__}, expected a dict of the columns to set "
                               "(or etl_job.SKIP to leave the row out)")
    if out is not row:
        row.update(out)  # only what changes, merged over the source row: an omitted column keeps its value
    if row.get(key) != key_value:
        return _Rejected(key, f"transform changed the key column {key!r}; keep it unchanged",
                         schema.excerpt(row.get(key)))
    unknown = row.keys() - tables.checks.keys()
    if unknown & {f.name for f in LINEAGE}:
        return _Rejected(sorted(unknown)[0], "the job writes the lineage columns run_id and processed_at itself; "
                                             "leave them out of the transform's result")
    if unknown:
        return _Rejected(sorted(unknown)[0], f"transform returned columns the destination lacks: {sorted(unknown)}; "
                                             "declare new columns in the transform module's OUTPUT_COLUMNS")
    problem = schema.row_problem(row, tables.checks)
    if problem:
        column, reason, value = problem
        return _Rejected(column, f"value does not fit column {column}: {reason}", value)
    return row


class _Loader:
    """Gathers batches, and loads what is gathered, on a background thread while the main thread reads and
    transforms the next batch.

    ``submit`` first waits for the previous batch to be handled, so at most two batches are in memory
    besides the gathered Parquet.
    """

    def __init__(self, bq: BigQuery, tables: _Tables, result: RunResult, started: float, stop: stopping.Stop) -> None:
        self._bq, self._tables, self._result, self._started, self._stop = bq, tables, result, started, stop
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._gathered = arrow_io.Parquet(tables.staging_arrow)  # transformed rows not loaded yet (whole batches)
        self._in_hand = 0  # rows of the batch being loaded, neither gathered nor landed yet
        # The gathered rows being loaded and inserted on the lander thread while more are gathered (one at a time:
        # the staging table is one), how many rows it carries, and those a load job refused (see _land).
        self._lander = ThreadPoolExecutor(1, thread_name_prefix="lander")
        self._landing: futures.Future[int] | None = None
        self._landing_rows = 0
        self._landing_failed: list[Failure] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        """Hand over a batch once the previous one is handled (gathered, or loaded); raise if loading has failed."""
        self._queue.join()
        if self.error is not None:
            raise self.error
        self._queue.put(batch)

    def close(self) -> None:
        """Finish the batch handed over and the rows gathered (settle them, until the stop deadline); end the thread."""
        self._queue.put(_Batch(final=True))
        self._queue.put(None)
        self._thread.join()
        self._lander.shutdown(wait=False)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self.error is None:
                    self._load(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc
            finally:
                self._queue.task_done()

    def _gather(self, rows: list[Row], failed: list[Failure]) -> None:
        """Add the batch's rows, as Arrow, to those the next load writes; rows Arrow cannot hold join ``failed``."""
        table = self._convert(rows, failed)
        if table is not None and table.num_rows:
            self._gathered.add(table)

    def _load_rows(self, batch: _Batch, now: datetime.datetime) -> int:
        """Gather the batch's transformed rows with their lineage; load what is gathered once it is enough."""
        for row in batch.loaded:  # in place: one copy of the batch fewer in memory
            _to_staging(row, self._tables)
            row.update(run_id=self._result.run_id, processed_at=now)
        if not STORAGE_API:  # today's algorithm (make bench): the row form only
            inserted = self._land(batch.loaded, batch.failed) if batch.loaded else 0
            self._in_hand = 0
            return inserted
        self._gather(batch.loaded, batch.failed)
        for table in batch.checked:
            self._gathered.add(self._with_lineage(table, now))
        self._in_hand = 0  # the batch's rows are gathered: they land with the next load, or count as abandoned
        return self._flush(batch.failed, final=batch.final)

    def _with_lineage(self, table: pa.Table, now: datetime.datetime) -> pa.Table:
        """Rows the batch form transformed and the column checks passed, with the lineage columns, in the staging
        table's column order (a column added to the destination later comes after the lineage columns)."""
        rows = table.num_rows
        lineage = {"run_id": pa.repeat(self._result.run_id, rows),
                   "processed_at": pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), rows)}
        return pa.Table.from_arrays([lineage[name] if name in lineage else table[name] for name in
                                     self._tables.staging_arrow.names], schema=self._tables.staging_arrow)

    def _convert(self, rows: list[Row], failed: list[Failure]) -> Any:
        """The rows as Arrow; a row whose values do not convert is found by halving, without a load job."""
        try:
            return arrow_io.to_arrow(rows, self._tables.staging_arrow, self._tables.staging_schema)
        except arrow_io.CONVERSION_ERRORS as exc:
            if len(rows) == 1:
                _reject(rows[0], exc, failed, self._tables.key)
                return None
            halves = [self._convert(part, failed) for part in (rows[:len(rows) // 2], rows[len(rows) // 2:])]
            return pa.concat_tables([half for half in halves if half is not None])

    def _flush(self, failed: list[Failure], *, final: bool) -> int:
        """Start loading the gathered rows (one Parquet load and one INSERT, on the lander thread) once they reach
        LOAD_BYTES or have waited LOAD_SECONDS, so that the next rows are read meanwhile; at the end, load the rest
        and wait. Return how many rows the loads that ended inserted; rows they refused join ``failed``."""
        gathered, inserted = self._gathered, 0
        if gathered.rows and (final or gathered.size >= LOAD_BYTES or gathered.age >= LOAD_SECONDS):
            inserted += self._landed(failed)
            gathered.finish()
            self._landing_failed = []
            self._landing = self._lander.submit(self._land, gathered, self._landing_failed)
            self._landing_rows, self._gathered = gathered.rows, arrow_io.Parquet(self._tables.staging_arrow)
        if final:
            inserted += self._landed(failed)
        return inserted

    def _landed(self, failed: list[Failure]) -> int:
        """Wait for the load in flight (raises Abandoned at the stop deadline: its rows count as abandoned)."""
        if self._landing is None:
            return 0
        inserted = self._landing.result()
        failed += self._landing_failed
        self._landing, self._landing_rows = None, 0
        return inserted

    def _load(self, batch: _Batch) -> None:
        result, tables, key = self._result, self._tables, self._tables.key
        clock = time.monotonic()
        now = datetime.datetime.now(datetime.UTC)
        result.rows_abandoned += batch.abandoned
        result.rows_checked_by_row += batch.checked_by_row
        self._in_hand = len(batch.loaded) + sum(table.num_rows for table in batch.checked)
        skipped, failed = batch.skipped, batch.failed  # not recorded yet
        try:
            if (self._in_hand or skipped or failed or self._gathered.rows) and self._stop.past(
                    stopping.DEADLINE_SECONDS):
                raise Abandoned("the stop deadline has passed")
            result.rows_loaded += self._load_rows(batch, now)
            if skipped:
                rows = [{key: k, "run_id": result.run_id, "skipped_at": now} for k in skipped]
                self._bq.load_rows(rows, tables.skipped, tables.skipped_schema, write_disposition="WRITE_APPEND")
                result.rows_skipped += len(skipped)
                skipped = []
            if failed:
                rows = [{key: k, "column": column, "error": message, "value": value, "run_id": result.run_id,
                         "failed_at": now} for k, column, message, value in failed]
                self._bq.load_rows(rows, tables.errors, tables.errors_schema, write_disposition="WRITE_APPEND")
                result.rows_failed += len(failed)
                result.rows_duplicate_key += batch.duplicates
                failed = []
        except Abandoned:
            # A load or INSERT given up on either committed or not: the next run redoes whatever is missing.
            unsettled = self._in_hand + self._gathered.rows + self._landing_rows + len(skipped) + len(failed)
            self._gathered = arrow_io.Parquet(self._tables.staging_arrow)
            self._landing, self._landing_rows = None, 0
            result.rows_abandoned += unsettled
            log.warning("gave up on the batch in flight at the stop deadline; the next run redoes what did not land",
                        extra=fields(rows_abandoned=unsettled, deadline_seconds=stopping.DEADLINE_SECONDS))
            return
        finally:
            result.timings["load"] += time.monotonic() - clock
        if batch.final:
            return
        result.batches += 1
        log.info("batch done", extra=fields(
            batch=result.batches, rows_loaded=result.rows_loaded, rows_waiting=self._gathered.rows + self._landing_rows,
            rows_failed=result.rows_failed, rows_skipped=result.rows_skipped,
            rows_per_second=round(result.rows_loaded / (time.monotonic() - self._started), 1),
        ))

    def _land(self, rows: Unit, failed: list[Failure]) -> int:
        """Load the rows into staging and INSERT them into the destination; return how many were inserted.

        A load that fails for a row's fault (BigQuery's BadRequest, or a value Arrow cannot hold in its
        column, which the checks in ``schema`` did not foresee) is retried on each half of the rows, down
        to the one row at fault, which joins ``failed``: a few more load jobs for one bad row, never the
        whole batch lost.
        """
        tables = self._tables
        try:
            self._stage(rows)
        except _ROW_FAULTS as exc:
            rows = rows.read() if isinstance(rows, arrow_io.Parquet) else rows
            if len(rows) > 1:
                half = len(rows) // 2
                return self._land(rows[:half], failed) + self._land(rows[half:], failed)
            _reject(rows[0] if isinstance(rows, list) else rows.slice(0, 1).to_pylist()[0], exc, failed, tables.key)
            return 0
        changed = self._bq.run_dml(insert_sql(
            tables.destination, tables.staging, tables.key, [f.name for f in tables.schema],
            json_columns=tables.staged_json, bytes_columns=tables.staged_bytes))
        return len(rows) if changed is None else changed

    def _stage(self, rows: Unit) -> None:
        """Replace the staging table's rows with these: Parquet (or Arrow) in a Parquet load, or (today's algorithm)
        dicts in JSON."""
        tables = self._tables
        if isinstance(rows, list):
            self._bq.load_rows(rows, tables.staging, tables.staging_schema, write_disposition="WRITE_TRUNCATE")
            return
        parquet = rows if isinstance(rows, arrow_io.Parquet) else arrow_io.Parquet.of(rows)
        self._bq.load_parquet(parquet, tables.staging, tables.staging_schema, write_disposition="WRITE_TRUNCATE")


def _reject(row: Row, exc: Exception, failed: list[Failure], key: str) -> None:
    """Record the row a load refused in ``failed``; re-raise once a batch has too many (not the rows' fault)."""
    if sum(1 for entry in failed if entry[2].startswith(_REJECTED)) >= MAX_REJECTED_PER_BATCH:
        raise exc
    reason = _REJECTED[0] if isinstance(exc, api_exceptions.BadRequest) else _REJECTED[1]
    message = str(getattr(exc, "message", exc)).splitlines()[0][:MAX_ERROR_CHARS]
    failed.append((row[key], None, f"{reason}{message}",
                   schema.excerpt({k: v for k, v in row.items() if k not in ("run_id", "processed_at")})))


def _to_staging(row: Row, tables: _Tables) -> None:
    """Turn the row's top-level JSON values into JSON text, in place, for their STRING staging column."""
    for column in tables.staged_json:
        value = row.get(column)
        if value is not None:
            row[column] = arrow_io.json_text(value)
