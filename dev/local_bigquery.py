"""A local BigQuery (bqemulator) for the demo, the tests and the benchmark; never used in production.

In-process::

    with LocalBigQuery() as bq:          # bq.url == "http://127.0.0.1:<free port>"
        client = bq.client()

In its own process (what the tests and the benchmark use, so its CPU and memory stay apart)::

    with LocalBigQuery(subprocess=True) as bq:
        ...

Or from a shell: ``.venv/bin/python -m dev.local_bigquery`` (prints the URL, Ctrl-C stops it).

The Storage Read API (gRPC) listens on the REST port + 10, bqemulator's own layout (9050 and 9060),
which is where the job looks for it locally (``bigquery_io.storage_endpoint``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess as sp
import sys
import tempfile
import threading
from pathlib import Path

from etl_job.contract import LOCAL_GRPC_PORT_OFFSET, local_grpc_address

_READY_PREFIX = "LOCAL_BIGQUERY_URL="
_START_TIMEOUT_SECONDS = 60
PROJECT = "local-project"


def patch_for_offline() -> None:
    """Apply the two adjustments bqemulator 1.4.0 needs to run without internet.

    1. Its engine runs ``INSTALL spatial`` (a download) at start-up: skip it (GEOGRAPHY is then
       unavailable, which this project does not use).
    2. The google-cloud-bigquery client sends load-job bodies under 5 MiB as ``*/*``, which the
       emulator's upload route rejects: accept that media type.
    """
    from bqemulator.api.routes import upload
    from bqemulator.storage.engine import DuckDBEngine

    DuckDBEngine._load_spatial = lambda self: None  # type: ignore[method-assign]
    if "*/*" not in upload._PERMITTED_MEDIA_CONTENT_TYPES:
        upload._PERMITTED_MEDIA_CONTENT_TYPES = (  # type: ignore[assignment]  # one more than its declared length
            *upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")


def free_port_pair() -> int:
    """A free loopback port whose + LOCAL_GRPC_PORT_OFFSET is free too (for REST and gRPC)."""
    for _ in range(50):
        with socket.socket() as rest, socket.socket() as grpc:
            rest.bind(("127.0.0.1", 0))
            port = rest.getsockname()[1]
            try:
                grpc.bind(("127.0.0.1", port + LOCAL_GRPC_PORT_OFFSET))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of loopback ports for the local BigQuery")


def _settings(port: int, staging_dir: str):
    from bqemulator.config import LogLevel, Settings

    port = port or free_port_pair()
    return Settings(
        rest_port=port,
        grpc_port=port + LOCAL_GRPC_PORT_OFFSET,  # the Storage Read API
        default_project_id=PROJECT,
        enable_format_extensions=False,  # would download DuckDB's avro extension
        upload_staging_dir=Path(staging_dir),  # private, removed on stop
        time_travel_retention_days=0,  # keep fewer table copies in memory
        log_level=LogLevel.WARNING,
        metrics_enabled=False,
    )


class LocalBigQuery:
    """Start bqemulator on a free loopback port; stop it (and remove its files) on exit."""

    def __init__(self, *, subprocess: bool = False) -> None:
        self._subprocess = subprocess
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: sp.Popen[str] | None = None
        self._threaded: _ThreadedEmulator | None = None
        self.url = ""

    @property
    def grpc(self) -> str:
        """The Storage Read API's ``host:port`` (gRPC, no TLS)."""
        return local_grpc_address(self.url)

    def start(self) -> LocalBigQuery:
        """Start the emulator and wait until it answers; returns self."""
        self._tmp = tempfile.TemporaryDirectory(prefix="local_bigquery_")
        if self._subprocess:
            self._proc = sp.Popen(
                [sys.executable, "-m", "dev.local_bigquery", "--staging-dir", self._tmp.name],
                cwd=Path(__file__).resolve().parent.parent,
                stdout=sp.PIPE,
                stderr=sp.DEVNULL,
                text=True,
            )
            self.url = _read_url(self._proc)
        else:
            self._threaded = _ThreadedEmulator(_settings(0, self._tmp.name))
            self.url = self._threaded.start()
        return self

    @property
    def pid(self) -> int | None:
        """The emulator's process id when it runs in its own process."""
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Stop the emulator; idempotent."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except sp.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._threaded is not None:
            self._threaded.stop()
            self._threaded = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def client(self):
        """A google-cloud-bigquery client for this emulator (anonymous credentials)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.url),
        )

    def __enter__(self) -> LocalBigQuery:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _read_url(proc: sp.Popen[str]) -> str:
    """Wait for the child's ready line; fail (and stop the child) if it never comes."""
    result: list[str] = []

    def read() -> None:
        for line in proc.stdout or ():
            if line.startswith(_READY_PREFIX):
                result.append(line[len(_READY_PREFIX) :].strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT_SECONDS)
    if not result:
        proc.kill()
        code = proc.wait()
        raise RuntimeError(f"local BigQuery did not start (exit code {code}); run it alone to see why")
    return result[0]


class _ThreadedEmulator:
    """The emulator's asyncio server on a background thread with its own event loop."""

    def __init__(self, settings) -> None:
        from bqemulator.observability.logging_ import configure_logging
        from bqemulator.server import EmulatorServer

        configure_logging(level=settings.log_level, fmt=settings.log_format)
        patch_for_offline()
        self._server = EmulatorServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> str:
        """Start serving; returns the REST URL."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop)
        future.result(timeout=_START_TIMEOUT_SECONDS)
        return self._server.rest_url

    def stop(self) -> None:
        """Stop serving and end the thread."""
        future = asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop)
        future.result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)


def _serve(port: int, staging_dir: str | None) -> None:
    """Run the emulator in this process until SIGTERM or Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="local_bigquery_") as own_dir:
        emulator = _ThreadedEmulator(_settings(port, staging_dir or own_dir))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        url = emulator.start()
        print(f"{_READY_PREFIX}{url}", flush=True)
        print(
            f"export BIGQUERY_EMULATOR_HOST={url}  (Ctrl-C stops it)",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
        emulator.stop()
    os._exit(0)  # the emulator's own threads must not delay the exit


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run a local BigQuery (bqemulator).")
    parser.add_argument("--port", type=int, default=0,
                        help=f"REST port (default: a free one); gRPC listens on it + {LOCAL_GRPC_PORT_OFFSET}")
    parser.add_argument("--staging-dir", help="private directory for upload bodies")
    args = parser.parse_args()
    _serve(args.port, args.staging_dir)
