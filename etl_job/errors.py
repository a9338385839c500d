"""The job's one exception type for problems a user can fix, its exit codes, and how much of an error is kept."""

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
