"""Fixtures for the job's tests: a local BigQuery that holds back calls (the session's local BigQuery, the fresh
dataset per test and the real job process are in tests/conftest.py, shared with tests/integration)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from dev.proxy import forward


class _Hold(BaseHTTPRequestHandler):
    """Forwards each request to the local BigQuery, but never answers one whose body holds ``proxy.hold``."""

    protocol_version = "HTTP/1.1"
    proxy: HoldingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.proxy.bodies.append(body)
        self.proxy.requests.append((self.command, self.path))
        if self.proxy.hold in body:
            self.proxy.held.set()
            self.proxy.release.wait(60)
            self.close_connection = True  # dropped: the request never reached BigQuery
            return
        forward(self, self.proxy.target, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's names

    def log_message(self, *args) -> None:
        pass


class HoldingProxy:
    """A local BigQuery that hangs on one kind of call: requests whose body contains ``hold`` get no answer.

    ``hold=b""`` holds every request (an endpoint that accepts connections and never answers). Every
    request body is kept in ``bodies`` and its method and path in ``requests``: what the job sent on the wire.
    """

    def __init__(self, target_url: str, hold: bytes) -> None:
        self.target = urlsplit(target_url)
        self.hold = hold
        self.bodies: list[bytes] = []
        self.requests: list[tuple[str, str]] = []  # ("GET", "/bigquery/v2/projects/..."), in the order they came
        self.held = threading.Event()  # set once a request was held
        self.release = threading.Event()  # set to drop the held requests
        handler = type("Handler", (_Hold,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def holding_proxy(local_bigquery):
    """Make a HoldingProxy in front of the session's local BigQuery: ``holding_proxy(b"INSERT INTO ")``."""
    proxies: list[HoldingProxy] = []

    def make(hold: bytes) -> HoldingProxy:
        proxies.append(HoldingProxy(local_bigquery.url, hold))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def recording_proxy(holding_proxy):
    """A proxy in front of the local BigQuery that holds no request and keeps every body: what the job sent."""
    return holding_proxy(b"\x00never held")
