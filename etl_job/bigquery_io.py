"""The BigQuery adapter: every call the job makes, each with a bounded retry and timeout, and stoppable."""

from __future__ import annotations

import base64
import datetime
import decimal
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from etl_job import stopping
from etl_job.config import TableId
from etl_job.credentials import GoogleAuth

# The client's defaults retry for 10 minutes (and a local BigQuery answers some bad requests with
# HTTP 500, which is retried): bound every call so a failure surfaces in about a minute.
RETRY_DEADLINE_SECONDS = 60
JOB_TIMEOUT_SECONDS = 600  # the longest one load job or query may take
RETRY = DEFAULT_RETRY.with_deadline(RETRY_DEADLINE_SECONDS)
JOB_RETRY = DEFAULT_JOB_RETRY.with_deadline(2 * RETRY_DEADLINE_SECONDS)

# What a failed BigQuery or Google auth call raises; __main__ reports these without a traceback.
ERRORS = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    TimeoutError,  # concurrent.futures.TimeoutError is this in Python 3.11
    requests.exceptions.RequestException,  # e.g. the endpoint is unreachable
)


class Abandoned(Exception):
    """A BigQuery call given up on because the run is stopping; a job it started may still complete."""


def describe_error(exc: BaseException) -> str:
    """One line naming what failed and, where known, the fix."""
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        from etl_job.workload_identity import describe_error as describe_federation_error

        federation = describe_federation_error(exc)
        if federation:
            return federation
        return (
            f"Google rejected the credentials ({str(exc).splitlines()[0][:300]}): check that the key in "
            "GOOGLE_CREDENTIALS_JSON is current and its service account is enabled"
        )
    if isinstance(exc, api_exceptions.Forbidden):
        return (
            f"BigQuery refused access ({exc.message}): grant the service account roles/bigquery.dataViewer "
            "on the source, roles/bigquery.dataEditor on the destination dataset and roles/bigquery.jobUser "
            "on the project"
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
    given up on is asked to cancel; a load or a MERGE is atomic, so it either committed or not, and
    the next run redoes whatever is not in the destination.
    """

    def __init__(self, auth: GoogleAuth, project: str, stop: stopping.Stop | None = None) -> None:
        options = ClientOptions(api_endpoint=auth.endpoint) if auth.endpoint else None
        self.client = bigquery.Client(project=project, credentials=auth.credentials, client_options=options)
        self._stop = stop or stopping.Stop()

    def get_table(self, table: TableId) -> bigquery.Table | None:
        """The table's metadata, or None if it does not exist."""
        try:
            return self._wait(lambda: self.client.get_table(str(table), retry=RETRY))
        except api_exceptions.NotFound:
            return None

    def dataset_exists(self, table: TableId) -> bool:
        """Whether the table's dataset exists."""
        try:
            self._wait(lambda: self.client.get_dataset(f"{table.project}.{table.dataset}", retry=RETRY))
        except api_exceptions.NotFound:
            return False
        return True

    def create_table(self, table: TableId, schema: list[bigquery.SchemaField], *, clustering: list[str] | None = None,
                     expires: datetime.datetime | None = None) -> bigquery.Table:
        """Create the table with an explicit schema if it does not exist yet; return it."""
        definition = bigquery.Table(str(table), schema=schema)
        definition.clustering_fields = clustering
        definition.expires = expires
        self._wait(lambda: self.client.create_table(definition, exists_ok=True, retry=RETRY))
        return self._wait(lambda: self.client.get_table(str(table), retry=RETRY))

    def delete_table(self, table: TableId) -> None:
        """Drop the table if it exists (waits until the stop deadline: it is the run's cleanup)."""
        self._wait(lambda: self.client.delete_table(str(table), not_found_ok=True, retry=RETRY, timeout=30),
                   settle=True)

    def query_value(self, sql: str):
        """The first column of the first row of a query's result."""
        job = self._wait(lambda: self.client.query(sql, retry=RETRY, job_retry=JOB_RETRY))
        rows = self._wait(lambda: list(job.result(retry=RETRY, timeout=JOB_TIMEOUT_SECONDS, job_retry=JOB_RETRY)),
                          job=job)
        return rows[0][0]

    def query_pages(self, sql: str, parameters: list, page_size: int) -> Iterator[list[dict]]:
        """Run one query and yield its result a page of at most ``page_size`` rows at a time.

        The client fetches the next page only when asked, so memory is bounded by the page size
        however large the result.
        """
        job_config = bigquery.QueryJobConfig(query_parameters=parameters)
        job = self._wait(lambda: self.client.query(sql, job_config=job_config, retry=RETRY, job_retry=JOB_RETRY))
        rows = self._wait(
            lambda: job.result(page_size=page_size, retry=RETRY, timeout=JOB_TIMEOUT_SECONDS, job_retry=JOB_RETRY),
            job=job,
        )
        pages = iter(rows.pages)
        while (page := self._wait(lambda: _next_page(pages), job=job)) is not None:
            yield page

    def dry_run(self, sql: str) -> list[bigquery.SchemaField]:
        """Have BigQuery check a query without running it (nothing is read, billed or written); its result's schema.

        Raises BadRequest with BigQuery's message if the query is not valid.
        """
        job_config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self._wait(lambda: self.client.query(sql, job_config=job_config, retry=RETRY, job_retry=None))
        return list(job.schema or [])

    def run_dml(self, sql: str) -> int | None:
        """Run a DML statement (MERGE, DELETE, ...), wait for it, return the rows it changed."""
        job = self._wait(lambda: self.client.query(sql, retry=RETRY, job_retry=JOB_RETRY), settle=True)
        self._wait(lambda: job.result(retry=RETRY, timeout=JOB_TIMEOUT_SECONDS, job_retry=JOB_RETRY),
                   settle=True, job=job)
        return job.num_dml_affected_rows

    def load_rows(self, rows: list[dict], table: TableId, schema: list[bigquery.SchemaField], *,
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
            timeout=RETRY_DEADLINE_SECONDS,
        ), settle=True)
        self._wait(lambda: job.result(retry=RETRY, timeout=JOB_TIMEOUT_SECONDS), settle=True, job=job)

    def _wait(self, call: Callable, *, settle: bool = False, job=None):
        """Make the blocking client call on a helper thread; return its result unless the run stops first.

        Gives up when a stop is requested, or with ``settle`` when the stop deadline passes; a client
        call cannot be interrupted, so it is left to finish (or fail) on its own daemon thread.
        """
        outcome: futures.Future = futures.Future()

        def target() -> None:
            try:
                outcome.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome.set_exception(exc)

        threading.Thread(target=target, name="bigquery-call", daemon=True).start()
        while not futures.wait([outcome], timeout=stopping.POLL_SECONDS).done:
            if self._stop.past(stopping.DEADLINE_SECONDS) or (self._stop.is_set() and not settle):
                if job is not None:
                    self._cancel(job)
                raise Abandoned(f"gave up waiting for BigQuery{f' job {job.job_id}' if job is not None else ''}")
        return outcome.result()

    def _cancel(self, job) -> None:
        try:
            self.client.cancel_job(job.job_id, location=job.location, retry=None, timeout=5)
        except Exception:  # noqa: BLE001 - best effort: the run is ending either way
            pass


def _next_page(pages: Iterator) -> list[dict] | None:
    page = next(pages, None)
    return None if page is None else [dict(row.items()) for row in page]


def to_json(value):
    """A BigQuery value as the client returned it, converted back into what a JSON load job accepts."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return str(value)
