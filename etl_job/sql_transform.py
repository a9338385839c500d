"""SQL push-down: a transform written as a SELECT list (ETL_TRANSFORM_SQL) runs inside BigQuery; no row passes here.

One INSERT reads the source rows the Python path's extract would read (the same anti-join on the key
against the destination and, where it exists, against the keys the Python transform skipped; one row
per key, the source filter and the shard predicate), computes the user's SELECT list over them (the
source is aliased ``s``) plus the lineage columns, and inserts them: the keys not in the destination
yet. A DML statement is atomic, so an interrupted run wrote all of it or nothing, and a rerun (on
either path) inserts exactly the keys still missing. An INSERT rather than a MERGE (see
``pipeline.insert_sql``); like the MERGE's join on the key, it checks the key it writes against the
destination too, so that a SELECT list that changes the key (not refused: nothing short of running it
shows that) still inserts each row once.

Before anything is written, the SELECT list over the filtered source is checked with one BigQuery dry
run (nothing read or billed); a mistake stops the run with BigQuery's message in one line. The
SELECT list must keep the key column unchanged and leave ``run_id`` / ``processed_at`` to the job.

Unlike the Python path, the extra rows of a duplicated key and rows with a NULL key are counted
and logged (exit 3), not written to ``<destination>_errors``: no row leaves BigQuery.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from google.cloud import bigquery

from etl_job import contract, schema, stopping
from etl_job.bigquery_io import ERRORS, Abandoned, BigQuery
from etl_job.config import Config, TableId
from etl_job.errors import JobError
from etl_job.logs import fields
from etl_job.runs import (
    LINEAGE,
    RunResult,
    Shard,
    check_source_filter,
    checked_dry_run,
    checked_source,
    filtered_source,
    key_not_in,
    new_run_id,
    pending_sql,
    require_dataset,
)

log = logging.getLogger(__name__)


def run(config: Config, bq: BigQuery, stop: stopping.Stop, shard: Shard) -> RunResult:
    """Check, then INSERT every source row not yet in the destination, transformed by the SELECT list, in one statement."""
    started = time.monotonic()
    result = RunResult(run_id=new_run_id(), timings={"check": 0.0, "insert": 0.0})
    with ThreadPoolExecutor(3, thread_name_prefix="check") as reads:  # independent round trips: at once
        checked = reads.submit(_checked_output, config, bq)
        destination = reads.submit(bq.get_table, config.destination_table)
        skipped_read = reads.submit(bq.get_table, config.skipped_table)
        source = checked_source(config, bq).schema  # a missing source is named first, as the dry run would fail too
        output = checked.result()
        columns = _output_columns(config, output)
        _prepare_destination(config, bq, source, output, destination.result())
        skipped = config.skipped_table if skipped_read.result() is not None else None
    result.timings["check"] = time.monotonic() - started
    if stop.is_set():
        return result
    log.info("run started", extra=fields(run_id=result.run_id, path="sql"))
    counter = ThreadPoolExecutor(1, thread_name_prefix="count")
    try:  # the count runs beside the INSERT, and at a stop is waited for as the INSERT is (see counts_sql)
        counts = counter.submit(bq.query_value, counts_sql(config, shard, skipped, result.run_id), settle=True)
        clock = time.monotonic()
        changed = bq.run_dml(insert_sql(config, shard, result.run_id, columns, skipped))
        result.timings["insert"] = time.monotonic() - clock
    except Abandoned:
        log.warning("stop requested: gave up on the INSERT (it committed whole or not at all); the next run "
                    "inserts whatever is missing")
        return result
    finally:
        counter.shutdown(wait=False)
    with_key, result.rows_null_key = _counted(counts, changed)
    if shard.index:
        result.rows_null_key = 0  # a NULL key hashes to no shard: shard 0 counts them
    # One row per key was inserted: the other rows with a key are the extra rows of duplicated keys.
    result.rows_read = result.rows_loaded = with_key if changed is None else changed
    result.rows_duplicate_key = result.rows_failed = with_key - result.rows_loaded
    result.batches, result.complete = 1, True
    result.seconds = time.monotonic() - started
    if result.rows_duplicate_key or result.rows_null_key:
        log.warning("source rows not in the destination: the extra rows of duplicated keys (one row per key was "
                    "inserted) and rows with a NULL key; on the SQL path they are counted, not recorded",
                    extra=fields(rows_duplicate_key=result.rows_duplicate_key, rows_null_key=result.rows_null_key,
                                 key_column=config.key_column))
    return result


def _counted(counts: Future[list[int]], changed: int | None) -> tuple[int, int]:
    """Source rows with a key and with a NULL key that the INSERT had to process; if counting them failed, the INSERT
    has committed all the same: a warning, and no duplicate or NULL keys counted this run."""
    try:
        with_key, null_key = (int(n) for n in counts.result())
    except (Abandoned, JobError, *ERRORS) as exc:
        log.warning("the INSERT committed, but counting the source rows it had to process failed: this run counts "
                    "no duplicated or NULL keys", extra=fields(rows_loaded=changed, error=str(exc)[:300]))
        return changed or 0, 0
    return with_key, null_key


def select_sql(config: Config) -> str:
    """The SELECT list over the (filtered) source: what the dry run checks and what gives the output's columns."""
    return f"SELECT\n{config.transform_sql}\n{filtered_source(config)}"


def counts_sql(config: Config, shard: Shard, skipped: TableId | None, run_id: str) -> str:
    """Rows with a key and rows with a NULL key, among the source rows still to process.

    The rows ``run_id`` inserted count as still to process, so the count reads the same before and after that
    run's INSERT commits: it runs beside the INSERT, one round trip less.
    """
    key = f"s.`{config.key_column}`"
    return (f"SELECT [COUNT({key}), COUNTIF({key} IS NULL)]\n"
            f"{pending_sql(config, shard, skipped, null_keys=True, run_id=run_id)}")


def insert_sql(config: Config, shard: Shard, run_id: str, columns: list[str], skipped: TableId | None = None) -> str:
    """The one statement of a SQL-path run: insert the transformed rows whose key is not in the destination yet.

    The columns are taken from the SELECT list by name, so a source column added since the dry run (``*``) is
    not inserted into another's place. The outer NOT EXISTS repeats the anti-join on the key as written, which
    differs from the source's only if the SELECT list changes it (0.01 s at 1,000,000 rows on the local BigQuery).
    """
    key = config.key_column
    names = ", ".join(f"`{c}`" for c in columns)
    return (
        f"INSERT INTO {config.destination_table.sql} ({names})\n"
        f"SELECT {names} FROM (\n"
        f"SELECT\n{config.transform_sql}\n, '{run_id}' AS run_id, CURRENT_TIMESTAMP() AS processed_at\n"
        f"{pending_sql(config, shard, skipped, one_per_key=True)}"
        f") AS S\n"
        f"WHERE {key_not_in(config.destination_table, key, row='S', alias='T')}"
    )


def _checked_output(config: Config, bq: BigQuery) -> list[bigquery.SchemaField]:
    """The SELECT list's columns, from one dry run of it over the filtered source, which checks the filter too.

    Only when it fails is the filter dry-run alone, so that a mistake is named as the filter's or the SELECT list's.
    """
    try:
        return checked_dry_run(bq, select_sql(config), "transform_sql", config)
    except JobError:
        check_source_filter(config, bq)
        raise


def _output_columns(config: Config, output: list[bigquery.SchemaField]) -> list[str]:
    """The SELECT list's column names plus the lineage columns; the key must be among them, lineage must not."""
    names = [f.name for f in output]
    lineage = [f.name for f in LINEAGE]
    problem = None
    if config.key_column not in names:
        problem = f"it does not return the key column {config.key_column!r}: keep it, unchanged (e.g. start with *)"
    elif set(names) & set(lineage):
        problem = "it returns run_id or processed_at, which the job writes itself: leave them out"
    elif len(set(names)) < len(names):
        problem = f"it returns a column name twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})"
    if problem:
        raise JobError(f"{contract.TRANSFORM_SQL} (config key transform_sql) is not usable: {problem}")
    return names + lineage


def _prepare_destination(config: Config, bq: BigQuery, source: list[bigquery.SchemaField], output: list[bigquery.SchemaField],
                         destination: bigquery.Table | None) -> None:
    """Create the destination (the output's columns, typed as in the source where they match, then lineage) or check it."""
    if destination is not None:
        missing = [f for f in [*output, *LINEAGE] if f.name not in {d.name for d in destination.schema}]
        if missing:
            alter = ", ".join(f"ADD COLUMN `{f.name}` {schema.standard(f.field_type)}" for f in missing)
            raise JobError(f"destination table {config.destination_table} lacks columns the SQL transform writes "
                           f"{[f.name for f in missing]}: ALTER TABLE {config.destination_table.sql} {alter}; "
                           "or drop the table and let the job create it")
        return
    require_dataset(bq, config.destination_table)
    by_name = {f.name: f for f in source}
    columns = [by_name[f.name] if f.name in by_name and schema.standard(by_name[f.name].field_type) == schema.standard(f.field_type)
               else bigquery.SchemaField(f.name, schema.standard(f.field_type), mode="REPEATED" if f.mode == "REPEATED"
                                         else "NULLABLE", fields=f.fields) for f in output]
    bq.create_table(config.destination_table, [*columns, *LINEAGE], clustering=[config.key_column])
    log.info("created destination table", extra=fields(table=str(config.destination_table)))
