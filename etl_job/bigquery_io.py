"""The BigQuery adapter: every call the job makes, each with a bounded retry and timeout."""

from __future__ import annotations

import base64
import datetime
import decimal
from collections.abc import Iterator

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

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


def describe_error(exc: BaseException) -> str:
    """One line naming what failed and, where known, the fix."""
    if isinstance(exc, auth_exceptions.GoogleAuthError):
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
    """The job's view of BigQuery: tables, paged queries, load jobs and DML, each waited for."""

    def __init__(self, auth: GoogleAuth, project: str) -> None:
        options = ClientOptions(api_endpoint=auth.endpoint) if auth.endpoint else None
        self.client = bigquery.Client(project=project, credentials=auth.credentials, client_options=options)

    def get_table(self, table: TableId) -> bigquery.Table | None:
        """The table's metadata, or None if it does not exist."""
        try:
            return self.client.get_table(str(table), retry=RETRY)
        except api_exceptions.NotFound:
            return None

    def dataset_exists(self, table: TableId) -> bool:
        """Whether the table's dataset exists."""
        try:
            self.client.get_dataset(f"{table.project}.{table.dataset}", retry=RETRY)
        except api_exceptions.NotFound:
            return False
        return True

    def create_table(self, table: TableId, schema: list[bigquery.SchemaField], *, clustering: list[str] | None = None,
                     expires: datetime.datetime | None = None) -> bigquery.Table:
        """Create the table with an explicit schema if it does not exist yet; return it."""
        definition = bigquery.Table(str(table), schema=schema)
        definition.clustering_fields = clustering
        definition.expires = expires
        self.client.create_table(definition, exists_ok=True, retry=RETRY)
        return self.client.get_table(str(table), retry=RETRY)

    def delete_table(self, table: TableId) -> None:
        """Drop the table if it exists."""
        self.client.delete_table(str(table), not_found_ok=True, retry=RETRY, timeout=30)

    def query_pages(self, sql: str, parameters: list, page_size: int) -> Iterator[list[dict]]:
        """Run one query and yield its result a page of at most ``page_size`` rows at a time.

        The client fetches the next page only when asked, so memory is bounded by the page size
        however large the result.
        """
        job = self.client.query(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=parameters), retry=RETRY, job_retry=JOB_RETRY
        )
        rows = job.result(page_size=page_size, retry=RETRY, timeout=JOB_TIMEOUT_SECONDS, job_retry=JOB_RETRY)
        for page in rows.pages:
            yield [dict(row.items()) for row in page]

    def run_dml(self, sql: str) -> int | None:
        """Run a DML statement (MERGE, DELETE, ...), wait for it, return the rows it changed."""
        job = self.client.query(sql, retry=RETRY, job_retry=JOB_RETRY)
        job.result(retry=RETRY, timeout=JOB_TIMEOUT_SECONDS, job_retry=JOB_RETRY)
        return job.num_dml_affected_rows

    def load_rows(self, rows: list[dict], table: TableId, schema: list[bigquery.SchemaField], *,
                  write_disposition: str) -> None:
        """Write rows with one load job (not streaming inserts) under an explicit schema; wait for it."""
        job_config = bigquery.LoadJobConfig(
            schema=schema,
            write_disposition=write_disposition,
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        )
        job = self.client.load_table_from_json(
            [{column: to_json(value) for column, value in row.items()} for row in rows],
            str(table),
            job_config=job_config,
            timeout=RETRY_DEADLINE_SECONDS,
        )
        job.result(retry=RETRY, timeout=JOB_TIMEOUT_SECONDS)


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
