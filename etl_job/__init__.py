"""The ETL job. Transforms use from here: ``SKIP`` (drop this row), ``JSON_NULL`` (a JSON null), and for the batch
form (``etl_job.arrow_transform``) the decorator ``batch_transform`` and the column name ``SKIP_COLUMN``."""

from collections.abc import Callable
from typing import TypeVar

_F = TypeVar("_F", bound=Callable[..., object])


class _Marker:
    """A named, unique value that no row data can be equal to by accident."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


# Returned by a transform: do not load this row; its key is recorded in <destination>_skipped and not read again.
SKIP = _Marker("etl_job.SKIP")
# The JSON value null in a JSON column (SQL NULL is None): a transform sees and returns it as this.
JSON_NULL = _Marker("etl_job.JSON_NULL")
# In a batch transform's result: a boolean column whose true rows are left out, as SKIP leaves out one row.
SKIP_COLUMN = "etl_skip"
BATCH_MARK = "etl_job_batch_transform"  # the attribute batch_transform sets


def batch_transform(function: _F) -> _F:
    """Mark a transform as the batch form: it takes a pyarrow.Table of source rows and returns one of the
    columns to set (see ``etl_job.arrow_transform``), instead of a row dict for a row dict."""
    setattr(function, BATCH_MARK, True)
    return function


def is_batch_transform(function: object) -> bool:
    """Whether the transform is the batch form (marked with ``batch_transform``)."""
    return bool(getattr(function, BATCH_MARK, False))
