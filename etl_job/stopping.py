"""Stopping a run: why and when it was asked to stop, and how long in-flight work may take to settle."""

from __future__ import annotations

import threading
import time

from etl_job.errors import ExitCode

# Measured from the stop request (SIGTERM, Ctrl-C or ETL_TIMEOUT_MINUTES). ECS SIGKILLs the task
# limits.STOP_TIMEOUT_SECONDS (120) after SIGTERM, so everything here must end well before that.
SETTLE_SECONDS = 30  # transforms still running are abandoned (their rows are redone by the next run)
DEADLINE_SECONDS = 90  # BigQuery work still in flight (a load, an INSERT) is abandoned and the run ends
POLL_SECONDS = 0.25  # how often a wait on BigQuery checks for a stop


class Stop:
    """Why the run was asked to stop (first reason wins) and when; the pipeline and every BigQuery wait watch it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.code: ExitCode | None = None
        self._requested_at: float | None = None

    def request(self, code: ExitCode) -> None:
        """Ask the run to stop with this exit code (a signal handler or timer calls this)."""
        if self.code is None:
            self.code = code
            self._requested_at = time.monotonic()
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def past(self, seconds: float) -> bool:
        """Whether a stop was requested more than ``seconds`` ago."""
        return self._requested_at is not None and time.monotonic() - self._requested_at > seconds
