"""The job's one exception type for problems a user can fix, and its exit codes."""

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
