"""The job's one exception type for problems a user can fix, its exit codes, and how an error is put in one line."""

from enum import IntEnum


class JobError(Exception):
    """A problem the user can fix (config, credentials, tables); the message names the input and the fix."""


class ExitCode(IntEnum):
    """Process exit codes; documented in ``etl_job/__main__.py``."""

    OK = 0
    FATAL = 1
    ROWS_FAILED = 3
    TIMED_OUT = 4
    SKIPPED_OVERLAP = 5
    INTERRUPTED_SIGINT = 130
    INTERRUPTED_SIGTERM = 143


MAX_ERROR_CHARS = 1000  # of an error's text, in the errors table
# The fix for a Google endpoint that does not answer (BigQuery's, or the token endpoint), ``what`` being the endpoint.
CONNECTIVITY = ("a connectivity problem; check the task's network path to {what} (subnet route or NAT, public IP, "
                "security group egress on 443, DNS, a TLS-inspecting proxy)")


def first_line(exc: BaseException) -> str:
    """The line of an error to show: its message (google-auth's errors carry (message, response body)), at most 300
    characters; the error's type if it has no text."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return (text.splitlines() or [type(exc).__name__])[0][:300]
