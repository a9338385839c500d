"""The ETL job. Transforms use two markers from here: ``SKIP`` (drop this row) and ``JSON_NULL`` (a JSON null)."""


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
