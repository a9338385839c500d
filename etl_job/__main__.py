"""Run the ETL job once: ``python -m etl_job`` (the container's command).

The process, top to bottom (this module): read and validate the configuration (``config``),
install the SIGTERM handler and timeout, skip if an older run is still going (``overlap``),
resolve Google credentials (``credentials``), import the transform (ETL_TRANSFORM), then run the
pipeline (``pipeline``: extract → ``transform`` → load, through the BigQuery adapter ``bigquery_io``),
or, with ETL_TRANSFORM_SQL set, the SQL path (``sql_transform``: one INSERT inside BigQuery),
and turn its outcome into log lines, a metric and an exit code.

Exit codes:
    0    success: every source row is in the destination or was skipped by the transform (prints the
         SuccessfulRun metric line)
    1    fatal: bad configuration, credentials or transform module, missing source table, a destination that
         does not fit the source (names the ALTER TABLE), BigQuery failure or unreachable
    3    finished, but some source rows are not in the destination: the transform failed them or
         a value does not fit its column, or their key is duplicated (all in ``<destination>_errors``), or
         their key is NULL (counted in the log)
    4    timed out (ETL_TIMEOUT_MINUTES) and stopped cleanly; the next run continues
    5    skipped: an older run of this job is still going (ECS only)
    130  interrupted by SIGINT (Ctrl-C), stopped cleanly
    143  interrupted by SIGTERM (Spot interruption, ``ecs stop-task``), stopped cleanly

Stopping cleanly means: no new batch is started, the batch in flight is loaded, and the next run
picks up every row not loaded. Transforms still running 30 s after the stop are abandoned, and
BigQuery work still in flight 90 s after it (before ECS's SIGKILL at 120 s); see ``stopping``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from etl_job import config as config_module
from etl_job import credentials, logs, metrics, overlap, stopping
from etl_job.errors import ExitCode, JobError
from etl_job.logs import fields

if TYPE_CHECKING:  # imported when the run needs them: the google client is slow to import
    from etl_job.bigquery_io import BigQuery
    from etl_job.runs import RunResult

log = logging.getLogger("etl_job")
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameters


def main() -> int:
    """Run the job once; return the exit code."""
    started = time.monotonic()
    _limit_malloc_arenas()
    stop = stopping.Stop()
    signal.signal(signal.SIGTERM, lambda *_: stop.request(ExitCode.INTERRUPTED_SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: stop.request(ExitCode.INTERRUPTED_SIGINT))
    config = _load_config()
    if config is None:
        return ExitCode.FATAL
    _start_timeout(config, stop)

    log.info("job starting", extra=fields(**config.summary()))
    try:
        outcome = _run(config, stop)
    except JobError as exc:
        log.error(str(exc), extra=fields(exit_code=int(ExitCode.FATAL)))
        return ExitCode.FATAL
    except Exception:  # a bug, not a user error: keep the traceback, in the log line
        log.exception("unexpected error; please report it", extra=fields(exit_code=int(ExitCode.FATAL)))
        return ExitCode.FATAL
    if isinstance(outcome, ExitCode):
        return outcome
    result, bq = outcome
    code = _exit_code(result, stop)
    _report(config, result, bq, code, duration=time.monotonic() - started)
    return code


def _limit_malloc_arenas() -> None:
    """Two malloc arenas, not one per thread (up to 8 per core): with 64 transform threads, freed memory
    scattered over many arenas is not reused, and the job's peak memory grew with the table (make bench).
    And a fixed mmap threshold: glibc raises it as large blocks are freed, so Arrow's megabyte buffers
    then came from the heap and stayed there (the 1,000,000-row peak fell from 275 to 240 MiB)."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):  # not glibc: its allocator has no arenas to limit
        pass


def _load_config() -> config_module.Config | None:
    """The validated configuration, logging set up as it asks; None after logging why it is invalid."""
    try:
        config = config_module.load_config(os.environ, is_tty=sys.stderr.isatty())
    except JobError as exc:
        logs.configure("INFO", "text" if sys.stderr.isatty() else "json")
        log.error(str(exc), extra=fields(exit_code=int(ExitCode.FATAL)))
        return None
    logs.configure(config.log_level, config.log_format)
    return config


def _start_timeout(config: config_module.Config, stop: stopping.Stop) -> None:
    if config.timeout_minutes:
        timer = threading.Timer(config.timeout_minutes * 60, stop.request, args=(ExitCode.TIMED_OUT,))
        timer.daemon = True
        timer.start()


def _run(config: config_module.Config, stop: stopping.Stop) -> tuple[RunResult, BigQuery] | ExitCode:
    """Skip if an older run is going; else resolve credentials and run the Python path or the SQL path."""
    if overlap.older_run_in_progress(os.environ, shard=(config.shard_index, config.shard_count)):
        return ExitCode.SKIPPED_OVERLAP
    try:
        auth = credentials.resolve(os.environ)
    finally:
        credentials.forget_secret_environment()
    log.info("using Google credentials", extra=fields(credentials=auth.description))
    transform = None if config.transform_sql else config_module.import_transform(config.transform)
    if transform is None:
        _without_storage_read_client()
    # the google client is slow to import: only when needed (and the SQL path never imports the Python path's)
    from etl_job import bigquery_io, runs

    bq = bigquery_io.BigQuery(auth, project=config.destination_table.project, stop=stop,
                              max_bytes_billed=config.max_bytes_billed,
                              # the SQL path reads no rows: it needs no Storage Read API endpoint
                              storage_endpoint=None if transform is None else bigquery_io.storage_endpoint(os.environ))
    try:
        shard = runs.Shard(config.shard_index, config.shard_count)
        if transform is None:  # SQL push-down: one INSERT inside BigQuery
            from etl_job import sql_transform

            result = sql_transform.run(config, bq, stop, shard=shard)
        else:
            from etl_job import pipeline

            function, output_columns = transform
            result = pipeline.run(config, bq, function, stop, shard=shard, output_columns=output_columns)
    except bigquery_io.ERRORS as exc:
        log.debug("BigQuery error detail", exc_info=True)
        log.error(bigquery_io.describe_error(exc), extra=fields(exit_code=int(ExitCode.FATAL)))
        return ExitCode.FATAL
    return result, bq


def _without_storage_read_client() -> None:
    """On the SQL path, which reads no rows, keep google-cloud-bigquery from importing its optional Storage Read
    client and pyarrow: 0.04 s of a 0.64 s SQL-path run (make bench). A module set to None in ``sys.modules`` is
    one an import cannot find (for the rest of this process, which is one run), and the client handles it as not
    installed; a test runs the SQL path and checks that neither was loaded."""
    for name in ("google.cloud.bigquery_storage_v1", "google.cloud.bigquery_storage", "pyarrow"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: documented as "not importable"


def _exit_code(result: RunResult, stop: stopping.Stop) -> ExitCode:
    if not result.complete:
        return stop.code or ExitCode.FATAL
    if result.rows_failed or result.rows_null_key:
        return ExitCode.ROWS_FAILED
    return ExitCode.OK


def _report(config: config_module.Config, result: RunResult, bq: BigQuery, code: ExitCode, *, duration: float) -> None:
    """The run's last log line (the counts a person and the alerts read) and, on success, the metric line."""
    log.log(
        logging.INFO if code == ExitCode.OK else logging.WARNING,
        _ENDINGS[code],
        extra=fields(
            exit_code=int(code), run_id=result.run_id, shard_index=config.shard_index,
            shard_count=config.shard_count, rows_read=result.rows_read, rows_loaded=result.rows_loaded,
            rows_failed=result.rows_failed, rows_skipped=result.rows_skipped,
            rows_duplicate_key=result.rows_duplicate_key,
            rows_null_key=result.rows_null_key, rows_abandoned=result.rows_abandoned, batches=result.batches,
            rows_checked_by_row=result.rows_checked_by_row,
            duration_seconds=round(duration, 3), bytes_processed=bq.bytes_processed, bytes_billed=bq.bytes_billed,
            rows_per_second=round(result.rows_read / result.seconds, 1) if result.seconds else 0.0,
            **{f"{phase}_seconds": round(seconds, 3) for phase, seconds in result.timings.items()},
        ),
    )
    if code == ExitCode.OK:
        print(metrics.success_emf_line(stage=config.stage, rows_loaded=result.rows_loaded,
                                       rows_failed=result.rows_failed, duration_seconds=duration,
                                       bytes_billed=bq.bytes_billed, bytes_processed=bq.bytes_processed), flush=True)


_ENDINGS = {
    ExitCode.OK: "job finished",
    ExitCode.ROWS_FAILED: "job finished, but some source rows are not in the destination: rows_failed are in "
                          "the errors table, rows_null_key have no key",
    ExitCode.TIMED_OUT: "job timed out and stopped cleanly; the next run continues from here",
    ExitCode.INTERRUPTED_SIGTERM: "job stopped by SIGTERM; the next run continues from here",
    ExitCode.INTERRUPTED_SIGINT: "job stopped by Ctrl-C; the next run continues from here",
    ExitCode.FATAL: "job stopped before finishing",
}


if __name__ == "__main__":
    exit_code = int(main())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a transform abandoned after a stop may still be running in a worker thread,
    # and the interpreter would wait for it; ECS would then SIGKILL the task.
    os._exit(exit_code)
