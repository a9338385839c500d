"""Every query the job sends is capped by max_bytes_billed, and the bytes BigQuery billed are in the last log line.

The local BigQuery has no cost model (it reports 0 bytes for every query and ignores maximumBytesBilled), so
a proxy in front of it records each query job the real job process sends and answers as BigQuery would: each
query's statistics report BILLED bytes, and with ``refuse_below`` a query capped under BILLED is refused with
BigQuery's ``bytesBilledLimitExceeded`` error. Every table it describes holds BILLED bytes (the local BigQuery
reports 0).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from dev import proxy as forwarding
from etl_job.pipeline import READ_AS_IT_IS
from tests.support import emf_lines, log_lines, log_messages

BILLED = 20 * 1024 * 1024  # what each query "bills" through the proxy


class BillingProxy:
    """Forwards to the local BigQuery; records query job configurations and adds BigQuery's byte statistics."""

    def __init__(self, target_url: str, refuse_below: int | None = None) -> None:
        self.target = urlsplit(target_url)
        self.refuse_below = refuse_below
        self.queries: list[dict] = []  # configuration.query of every query job inserted
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = proxy._query_of(self.command, self.path, body)
                if query is not None and proxy.refuse_below and int(query.get("maximumBytesBilled", 0)) < proxy.refuse_below:
                    message = f"Query exceeded limit for bytes billed: {query.get('maximumBytesBilled')}. {BILLED} or higher required."
                    error = {"code": 400, "message": message, "status": "INVALID_ARGUMENT",
                             "errors": [{"reason": "bytesBilledLimitExceeded", "domain": "global", "message": message}]}
                    return forwarding.answer(self, 400, {"Content-Type": "application/json"},
                                             json.dumps({"error": error}).encode())
                status, headers, data = forwarding.send(proxy.target, self.command, self.path, body, self.headers)
                forwarding.answer(self, status, headers, proxy._with_statistics(data))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _query_of(self, method: str, path: str, body: bytes) -> dict | None:
        if method != "POST" or not urlsplit(path).path.endswith("/jobs") or not body:
            return None
        try:
            query = json.loads(body).get("configuration", {}).get("query")
        except ValueError:  # a load job's multipart upload
            return None
        if query is not None:
            self.queries.append(query)
        return query

    @staticmethod
    def _with_statistics(data: bytes) -> bytes:
        try:
            resource = json.loads(data)
        except ValueError:
            return data
        if isinstance(resource, dict) and "query" in resource.get("configuration", {}):
            statistics = resource.setdefault("statistics", {}).setdefault("query", {})
            statistics.update(totalBytesProcessed=str(BILLED), totalBytesBilled=str(BILLED))
            return json.dumps(resource).encode()
        if isinstance(resource, dict) and resource.get("kind") == "bigquery#table":
            return json.dumps({**resource, "numBytes": str(BILLED)}).encode()
        return data

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def billing_proxy(local_bigquery):
    proxies: list[BillingProxy] = []

    def make(**options) -> BillingProxy:
        proxies.append(BillingProxy(local_bigquery.url, **options))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def test_every_query_is_capped_and_the_bytes_billed_are_reported(job, billing_proxy) -> None:
    job.seed(40)
    proxy = billing_proxy()

    done = job.run(BIGQUERY_EMULATOR_HOST=proxy.url, ETL_MAX_BYTES_BILLED="1099511627776")

    assert done.returncode == 0, log_lines(done.stderr)[-1]
    assert len(proxy.queries) >= 2  # the first run's check of the source's keys and at least one INSERT
    assert [q.get("maximumBytesBilled") for q in proxy.queries] == ["1099511627776"] * len(proxy.queries)
    end = log_lines(done.stderr)[-1]
    assert end["message"] == "job finished"
    assert end["bytes_billed"] == end["bytes_processed"] == BILLED * len(proxy.queries)
    (emf,) = emf_lines(done.stdout)
    assert emf["BytesBilled"] == BILLED * len(proxy.queries)
    assert {"Name": "BytesBilled", "Unit": "Bytes"} in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]


@pytest.mark.parametrize(("cap", "read_as_it_is"), [(BILLED, True), (BILLED // 2, False)])
def test_a_first_run_reads_the_source_as_it_is_only_when_the_cap_would_let_a_query_read_it(
        job, billing_proxy, cap, read_as_it_is) -> None:
    # The Storage Read API's bytes are not capped by max_bytes_billed: a source above the cap is extracted, whose
    # query the cap stops on BigQuery (here it goes through: this proxy refuses nothing).
    job.seed(10)

    done = job.run(BIGQUERY_EMULATOR_HOST=billing_proxy().url, ETL_MAX_BYTES_BILLED=str(cap))

    assert done.returncode == 0, log_lines(done.stderr)[-1]
    assert (READ_AS_IT_IS in log_messages(done)) is read_as_it_is


def test_a_query_over_the_cap_stops_the_run_with_one_clear_line(job, billing_proxy) -> None:
    job.seed(10)
    proxy = billing_proxy(refuse_below=BILLED)

    done = job.run(BIGQUERY_EMULATOR_HOST=proxy.url, ETL_MAX_BYTES_BILLED=str(BILLED // 2))

    assert done.returncode == 1
    last = log_lines(done.stderr)[-1]
    assert last["message"].startswith("BigQuery refused a query above the cap on bytes billed (")
    assert "raise max_bytes_billed in cdk.json (ETL_MAX_BYTES_BILLED locally)" in last["message"]
    assert "Traceback" not in done.stderr
