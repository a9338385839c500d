"""The BigQuery adapter: every call the job makes, each with a bounded retry and timeout, and stoppable."""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent import futures
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from etl_job import contract, stopping
from etl_job.config import TableId
from etl_job.credentials import GoogleAuth
from etl_job.errors import CONNECTIVITY, JobError, first_line

# The client's defaults retry for 10 minutes, and some calls have no timeout at all (an endpoint that
# accepts the connection and never answers would hold the run until ETL_TIMEOUT_MINUTES): every request
# has a timeout, every call a retry deadline, and every wait in ``_wait`` an overall limit, so a
# connectivity problem surfaces as one error in about a minute. Module values, read at call time.
REQUEST_TIMEOUT_SECONDS = 20.0  # one HTTP request
RETRY_DEADLINE_SECONDS = 60.0  # one call, retries included
JOB_TIMEOUT_SECONDS = 600.0  # the longest one load job or query may run
JOB_POLL_SECONDS = 1.0  # the longest pause between two looks at a running job
# Storage Read API streams read in parallel (BigQuery may offer fewer). Two, not more: one task's transform and
# load take rows slower than one stream sends them, and each stream costs memory (make bench: four were no faster
# and 15 MiB larger). To read faster, split the run into shards (ETL_SHARD_COUNT): each task reads its own streams.
READ_STREAMS = 2
READ_BUFFER = 1  # Storage Read messages received ahead of the reader, over all streams: bounds memory
_T = TypeVar("_T")
Job = Any  # a google.cloud.bigquery job (QueryJob or LoadJob)

# What a failed BigQuery or Google auth call raises; __main__ reports these without a traceback.
ERRORS = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    TimeoutError,  # concurrent.futures.TimeoutError is this in Python 3.11
    requests.exceptions.RequestException,  # e.g. the endpoint is unreachable
)
# Not auth_exceptions.TransportError: a token endpoint that fails is reported by describe_error.
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, TimeoutError)


def storage_endpoint(env: Mapping[str, str]) -> str | None:
    """The local BigQuery's Storage Read API (gRPC ``host:port``), or None for Google's.

    BIGQUERY_STORAGE_EMULATOR_HOST if set, else, with BIGQUERY_EMULATOR_HOST, its host on its port + 10.
    ETL_BIGQUERY_ENDPOINT (a local URL for real credentials) needs BIGQUERY_STORAGE_EMULATOR_HOST beside it:
    without, the rows would be read from Google's endpoint while every other call went to the local one. Only the
    Python path asks (the SQL path reads no rows).
    """
    explicit = env.get(contract.BIGQUERY_STORAGE_EMULATOR_HOST, "").strip()
    if explicit:
        return explicit
    emulator = env.get(contract.BIGQUERY_EMULATOR_HOST, "").strip()
    if not emulator:
        if env.get(contract.BIGQUERY_ENDPOINT, "").strip():
            raise JobError(f"{contract.BIGQUERY_ENDPOINT} sends the BigQuery API calls to a local endpoint, but the "
                           f"Storage Read API would still go to Google's: set {contract.BIGQUERY_STORAGE_EMULATOR_HOST} "
                           "to the gRPC host:port that serves it beside that endpoint (e.g. 127.0.0.1:9060)")
        return None
    return contract.local_grpc_address(emulator)


def _sign_in_error(exc: auth_exceptions.GoogleAuthError) -> str:
    """Why getting a Google token failed: no answer, Google's verdict on the credentials, or a failure in between."""
    from etl_job.workload_identity import describe_error as describe_federation_error

    federation = describe_federation_error(exc)
    if federation:
        return federation
    detail = first_line(exc)
    if isinstance(exc, auth_exceptions.TransportError):  # no answer: not a verdict on the key
        return f"could not reach Google's token endpoint to sign in ({detail}): {CONNECTIVITY.format(what='Google')}"
    answer = exc.args[1] if len(exc.args) > 1 else None
    if getattr(exc, "retryable", False) or not (isinstance(answer, dict) and "error" in answer):
        # a 5xx or 429 after google-auth's retries, or an answer that is not Google's (a proxy's page)
        return (f"Google's token endpoint failed to answer the sign-in ({detail}): not a verdict on the key; the next "
                "run tries again; if it persists, check for a proxy between the task and Google")
    return (f"Google rejected the credentials ({detail}): check that the key in GOOGLE_CREDENTIALS_JSON is current "
            "and its service account is enabled")


def call_limit() -> float:
    """How long one call may take, retries included, before the run gives up on BigQuery."""
    return RETRY_DEADLINE_SECONDS + REQUEST_TIMEOUT_SECONDS


class Abandoned(Exception):
    """A BigQuery call given up on because the run is stopping; a job it started may still complete."""


def describe_error(exc: BaseException) -> str:
    """One line naming what failed and, where known, the fix."""
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return _sign_in_error(exc)
    if isinstance(exc, api_exceptions.GoogleAPICallError) and any(
        e.get("reason") == "bytesBilledLimitExceeded" for e in exc.errors or [] if isinstance(e, dict)
    ):
        return (
            f"BigQuery refused a query above the cap on bytes billed ({exc.message}): raise max_bytes_billed in "
            f"cdk.json ({contract.MAX_BYTES_BILLED} locally), or read a smaller source (a view or a partition)"
        )
    if isinstance(exc, api_exceptions.Forbidden):
        return (
            f"BigQuery refused access ({exc.message}): grant the service account roles/bigquery.dataViewer "
            "on the source, roles/bigquery.dataEditor on the destination dataset, and roles/bigquery.jobUser and "
            "roles/bigquery.readSessionUser (the Storage Read API) on the project"
        )
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return f"BigQuery request failed: {exc.code} {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"BigQuery did not answer in time ({exc or 'timeout'}): retry later; check BigQuery's status"
    return f"BigQuery could not be reached ({type(exc).__name__}: {str(exc)[:300]})"


class BigQuery:
    """The job's view of BigQuery: tables, paged queries, load jobs and DML, each waited for until the run stops.

    Every call waits in short slices and gives up (raises ``Abandoned``) once the run is stopping:
    reads at once, writes that settle the batch in flight (``settle``) at the stop deadline. A job
    given up on is asked to cancel; a load or a DML statement is atomic, so it either committed or not, and
    the next run redoes whatever is not in the destination.
    """

    def __init__(self, auth: GoogleAuth, project: str, stop: stopping.Stop | None = None, *,
                 max_bytes_billed: int | None = None, storage_endpoint: str | None = None) -> None:
        options = ClientOptions(api_endpoint=auth.endpoint) if auth.endpoint else None
        self.client = bigquery.Client(project=project, credentials=auth.credentials,  # type: ignore[arg-type]  # google-auth's
                                      client_options=options)
        self._auth, self._storage_endpoint, self._read_client = auth, storage_endpoint, None
        self.endpoint = auth.endpoint or "https://bigquery.googleapis.com"
        self._stop = stop or stopping.Stop()
        self._retry = DEFAULT_RETRY.with_deadline(RETRY_DEADLINE_SECONDS)
        self._job_retry = DEFAULT_JOB_RETRY.with_deadline(2 * RETRY_DEADLINE_SECONDS)
        self._max_bytes_billed = max_bytes_billed
        self.bytes_processed = 0  # over every query of the run, as BigQuery reports them
        self.bytes_billed = 0
        self._counting = threading.Lock()

    def _count_bytes(self, job: Job) -> None:
        with self._counting:  # jobs may end on two threads at once
            self.bytes_processed += job.total_bytes_processed or 0
            self.bytes_billed += job.total_bytes_billed or 0

    def get_table(self, table: TableId) -> bigquery.Table | None:
        """The table's metadata, or None if it does not exist."""
        try:
            return self._wait(lambda: self.client.get_table(str(table), **self._call()))
        except api_exceptions.NotFound:
            return None

    def dataset_exists(self, table: TableId) -> bool:
        """Whether the table's dataset exists."""
        try:
            self._wait(lambda: self.client.get_dataset(f"{table.project}.{table.dataset}", **self._call()))
        except api_exceptions.NotFound:
            return False
        return True

    def create_table(self, table: TableId, schema: list[bigquery.SchemaField], *, clustering: list[str] | None = None,
                     expires: datetime.datetime | None = None) -> bigquery.Table:
        """Create the table with an explicit schema if it does not exist yet; return it."""
        definition = bigquery.Table(str(table), schema=schema)
        definition.clustering_fields = clustering
        definition.expires = expires
        # With exists_ok the client answers a conflict by reading the existing table: either way, the table.
        return self._wait(lambda: self.client.create_table(definition, exists_ok=True, **self._call()))

    def add_columns(self, table: bigquery.Table, fields: list[bigquery.SchemaField]) -> bigquery.Table:
        """Append NULLABLE columns to an existing table's schema (a change BigQuery allows in place)."""
        table.schema = [*table.schema, *fields]
        return self._wait(lambda: self.client.update_table(table, ["schema"], **self._call()))

    def delete_table(self, table: TableId) -> None:
        """Drop the table if it exists (waits until the stop deadline: it is the run's cleanup)."""
        self._wait(lambda: self.client.delete_table(str(table), not_found_ok=True, **self._call()), settle=True)

    def query_value(self, sql: str, *, settle: bool = False) -> Any:
        """The first column of the first row of a query's result (with ``settle``, waited for as a write is)."""
        job = self._start_query(sql, settle=settle)
        rows = self._wait(lambda: list(job.result(**self._results())), settle=settle, job=job)
        return rows[0][0]

    def query_pages(self, sql: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Run one query and yield its result a page of at most ``page_size`` rows at a time.

        The client fetches the next page only when asked, so memory is bounded by the page size
        however large the result.
        """
        job = self._start_query(sql)
        rows = self._wait(lambda: job.result(page_size=page_size, **self._results()), job=job)
        pages = iter(rows.pages)
        while (page := self._wait(lambda: _next_page(pages), job=job)) is not None:
            yield page

    def dry_run(self, sql: str) -> list[bigquery.SchemaField]:
        """Have BigQuery check a query without running it (nothing is read, billed or written); its result's schema.

        Raises BadRequest with BigQuery's message if the query is not valid.
        """
        job_config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self._wait(lambda: self.client.query(sql, job_config=job_config, job_retry=None, **self._call()))
        return list(job.schema or [])

    def run_dml(self, sql: str) -> int | None:
        """Run a DML statement (INSERT, DELETE, ...), wait for it, return the rows it changed."""
        job = self._start_query(sql, settle=True)
        self._wait(lambda: job.result(**self._results()), settle=True, job=job)
        changed: int | None = job.num_dml_affected_rows
        return changed

    def load_rows(self, rows: list[dict[str, Any]], table: TableId, schema: list[bigquery.SchemaField], *,
                  write_disposition: str) -> None:
        """Write rows with one load job (not streaming inserts) under an explicit schema; wait for it."""
        job_config = bigquery.LoadJobConfig(
            schema=schema,
            write_disposition=write_disposition,
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        )
        job = self._wait(lambda: self.client.load_table_from_json(
            [{column: to_json(value) for column, value in row.items()} for row in rows],
            str(table),
            job_config=job_config,
            timeout=RETRY_DEADLINE_SECONDS,  # the upload: one request carrying the whole batch
        ), settle=True)
        self._await_load(job)

    def materialize(self, sql: str, table: TableId, *, expires: datetime.datetime) -> None:
        """Write a query's result into a new table (CREATE TABLE AS SELECT) that BigQuery drops at ``expires``.

        DDL rather than a query job with a destination: the local BigQuery ignores a job's destination.
        """
        ddl = (f"CREATE TABLE {table.sql} OPTIONS (expiration_timestamp = TIMESTAMP '{expires:%Y-%m-%d %H:%M:%S} UTC')"
               f" AS\n{sql}")
        job = self._start_query(ddl)
        self._wait(lambda: job.result(**self._results()), job=job)

    def read_table(self, table: TableId, columns: list[str], batch_rows: int) -> Generator[Any, None, None]:
        """Read a table with the Storage Read API: Arrow, ``READ_STREAMS`` streams in parallel, only ``columns``.

        Yields pyarrow Tables of at most ``batch_rows`` rows (in no particular order). The streams hold
        at most ``READ_BUFFER`` messages received ahead of the reader between them, so memory is bounded
        however large the table.
        """
        from etl_job import arrow_io

        client = self._storage_client()
        session = self._wait(lambda: arrow_io.open_session(client, table, columns, READ_STREAMS,
                                                             timeout=REQUEST_TIMEOUT_SECONDS))
        reader = arrow_io.Reader(client, session, READ_BUFFER)
        try:
            while True:  # a thread to wait on only when the rows are not there yet (one call in 13 on a local BigQuery)
                batch = reader.next_rows(batch_rows) if reader.holds(batch_rows) else self._wait(
                    lambda: reader.next_rows(batch_rows))
                if batch is None:
                    return
                yield batch
        finally:
            reader.close()

    def load_parquet(self, parquet: Any, table: TableId, schema: list[bigquery.SchemaField], *,
                     write_disposition: str) -> None:
        """Write a Parquet file (``arrow_io.Parquet``, finished) with one load job under an explicit schema; wait for it."""
        job_config = bigquery.LoadJobConfig(schema=schema, write_disposition=write_disposition,
                                            source_format=bigquery.SourceFormat.PARQUET)
        job_config.parquet_options = bigquery.ParquetOptions()  # type: ignore[no-untyped-call]  # the library's own
        job_config.parquet_options.enable_list_inference = True  # list<element> is an ARRAY, not a STRUCT
        body = parquet.data
        size = len(body.getbuffer())  # known: the client then sends up to 5 MiB in one request
        job = self._wait(lambda: self.client.load_table_from_file(body, str(table), size=size, job_config=job_config,
                                                                  timeout=RETRY_DEADLINE_SECONDS), settle=True)
        self._await_load(job)

    def _await_load(self, job: Job) -> None:
        """Wait for a load job to end and raise its error, if any (a write: until the stop deadline)."""
        self._finish(job, settle=True)
        self._wait(lambda: job.result(retry=self._retry, timeout=REQUEST_TIMEOUT_SECONDS), settle=True, job=job)

    def _storage_client(self) -> Any:
        if self._read_client is None:
            from etl_job import arrow_io

            self._read_client = arrow_io.client(self._auth.credentials, self._storage_endpoint)
        return self._read_client

    def _call(self) -> dict[str, Any]:
        return {"retry": self._retry, "timeout": REQUEST_TIMEOUT_SECONDS}

    def _results(self) -> dict[str, Any]:
        return {"retry": self._retry, "timeout": REQUEST_TIMEOUT_SECONDS, "job_retry": self._job_retry}

    def _start_query(self, sql: str, *, settle: bool = False) -> Job:
        # Every query is capped at max_bytes_billed: BigQuery fails one that would bill more.
        job_config = bigquery.QueryJobConfig(maximum_bytes_billed=self._max_bytes_billed)
        job = self._wait(lambda: self.client.query(sql, job_config=job_config, job_retry=self._job_retry,
                                                   **self._call()), settle=settle)
        self._finish(job, settle=settle)
        self._count_bytes(job)
        return job

    def _finish(self, job: Job, *, settle: bool) -> None:
        """Wait for a job to end, looking at it every second at most (each look bounded), for JOB_TIMEOUT_SECONDS."""
        started, pause = time.monotonic(), 0.05
        while job.state != "DONE":
            if time.monotonic() - started > JOB_TIMEOUT_SECONDS:
                self._cancel(job)
                raise JobError(f"BigQuery job {job.job_id} did not finish within {JOB_TIMEOUT_SECONDS:.0f} s: "
                               "lower ETL_BATCH_SIZE, or check the job in the BigQuery console")
            self._wait(functools.partial(time.sleep, pause), settle=settle, job=job)
            self._wait(lambda: job.reload(**self._call()), settle=settle, job=job)
            pause = min(2 * pause, JOB_POLL_SECONDS)

    def _wait(self, call: Callable[[], _T], *, settle: bool = False, job: Job = None) -> _T:
        """Make the blocking client call on a helper thread; return its result unless the run stops first.

        Gives up when a stop is requested, or with ``settle`` when the stop deadline passes; a client
        call cannot be interrupted, so it is left to finish (or fail) on its own daemon thread. A call
        that takes longer than ``call_limit()``, or fails to reach BigQuery, is a JobError naming the endpoint.
        """
        outcome: futures.Future[_T] = futures.Future()

        def target() -> None:
            try:
                outcome.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome.set_exception(exc)

        threading.Thread(target=target, name="bigquery-call", daemon=True).start()
        limit = call_limit()
        started = time.monotonic()
        while not futures.wait([outcome], timeout=stopping.POLL_SECONDS).done:
            if self._stop.past(stopping.DEADLINE_SECONDS) or (self._stop.is_set() and not settle):
                if job is not None:
                    self._cancel(job)
                raise Abandoned(f"gave up waiting for BigQuery{f' job {job.job_id}' if job is not None else ''}")
            if time.monotonic() - started > limit:
                raise JobError(self._unreachable(f"no answer within {limit:.0f} s"))
        try:
            return outcome.result()
        except api_exceptions.RetryError as exc:
            if isinstance(exc.cause, _UNREACHABLE) or exc.cause is None:
                raise JobError(self._unreachable(f"{type(exc.cause).__name__}: {str(exc.cause)[:200]}")) from None
            raise exc.cause from None
        except _UNREACHABLE as exc:
            raise JobError(self._unreachable(f"{type(exc).__name__}: {str(exc)[:200]}")) from None

    def _unreachable(self, detail: str) -> str:
        return (f"BigQuery at {self.endpoint} did not answer ({detail}): {CONNECTIVITY.format(what='it')}, or "
                "BIGQUERY_EMULATOR_HOST if set")

    def _cancel(self, job: Job) -> None:
        try:
            self.client.cancel_job(job.job_id, location=job.location, retry=None,  # type: ignore[arg-type]  # None: no retry
                                   timeout=5)
        except Exception:  # noqa: BLE001 - best effort: the run is ending either way
            pass


def _next_page(pages: Iterator[Any]) -> list[dict[str, Any]] | None:
    page = next(pages, None)
    return None if page is None else [dict(row.items()) for row in page]


def to_json(value: Any) -> Any:
    """A BigQuery value as the client returned it, converted into what a JSON load job reads back unchanged.

    JSON has no NaN or infinity and BigQuery reads large JSON numbers as doubles, so those go as the
    strings BigQuery's JSON loader accepts: "NaN", "Infinity", "-Infinity", and integers beyond 2^53
    and NUMERIC / BIGNUMERIC values as fixed-point decimal strings. BYTES go base64-encoded.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[str(value)]
    if isinstance(value, int):
        return value if -_EXACT_JSON_INT <= value <= _EXACT_JSON_INT else str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")  # fixed-point: str() would write 1E-38
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return str(value)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_EXACT_JSON_INT = 2**53 - 1
