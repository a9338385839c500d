"""The batch form of the transform: one call per batch on a pyarrow Table, no Python object per value.

A transform module opts in with ``@etl_job.batch_transform``. The contract (also in the README):

* It is called once per batch (ETL_BATCH_SIZE rows) with a ``pyarrow.Table`` of the source rows,
  typed as the Storage Read API gives them (TIMESTAMP as ``timestamp[us, UTC]``, NUMERIC as
  ``decimal128(38, 9)``, ...; a JSON column as its JSON text).
* It returns a ``pyarrow.Table`` (or RecordBatch) of the same rows in the same order holding **only
  what changes**: each column it returns replaces the source's (or fills a column declared in
  ``OUTPUT_COLUMNS``); every other column keeps its source values. A returned key column must be unchanged.
* A boolean column named ``etl_job.SKIP_COLUMN`` in its result leaves the rows where it is true out,
  as ``etl_job.SKIP`` does for one row.
* It raises to reject rows: the batch is split in halves and each half transformed again until the
  rows it raises for are alone; they go to ``<destination>_errors`` with the exception and the rest load.
* Its columns are checked column by column with Arrow: a column of the destination's own Arrow type
  passes as it is, and one of another type only by a cast that cannot change a value (a narrower
  integer, a 32-bit float, another string or binary layout, a timestamp of another unit that loses no
  digits, a decimal of fewer places); NULL in a REQUIRED column or inside an ARRAY fails, and so does
  text in a JSON column that BigQuery's PARSE_JSON would refuse. A part of the batch with anything else
  (a float for a NUMERIC, an int for a STRING, a STRUCT of other fields, an unknown column, a changed
  key) is checked row by row instead, with the row form's checks, so each offending row goes to the
  errors table with its column and reason, and a value the row form would take loads as it would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl_job import JSON_NULL, SKIP_COLUMN, arrow_io
from etl_job.errors import MAX_ERROR_CHARS

BatchTransform = Callable[[pa.Table], object]


@dataclass
class Applied:
    """What a batch transform made of a batch: rows that passed the column checks, rows to check one by one, the rest."""

    checked: list[pa.Table] = field(default_factory=list)  # in the target schema, column for column
    unchecked: list[tuple[pa.Table, list[Any]]] = field(default_factory=list)  # (merged rows, their source keys)
    rejected: list[tuple[Any, str]] = field(default_factory=list)  # (key, why): the transform raised for the row
    skipped: list[Any] = field(default_factory=list)  # keys


@dataclass(frozen=True)
class Target:
    """What the transformed rows must fit: the staging columns (lineage excepted) as Arrow, with their rules."""

    schema: pa.Schema
    key: str
    required: frozenset[str]  # columns that cannot hold NULL
    json: frozenset[str]  # columns of JSON text


def apply(transform: BatchTransform, source: pa.Table, target: Target) -> Applied:
    """Run the transform over the batch, halving around rows it raises for; check and merge what it returns."""
    applied = Applied()
    _call(transform, source, target, applied)
    return applied


def _call(transform: BatchTransform, part: pa.Table, target: Target, applied: Applied) -> None:
    try:
        out = transform(part)
    except Exception as exc:  # noqa: BLE001 - any failure of user code rejects rows, found by halving
        if part.num_rows > 1:
            half = part.num_rows // 2
            _call(transform, part.slice(0, half), target, applied)
            _call(transform, part.slice(half), target, applied)
            return
        applied.rejected.append((part[target.key][0].as_py(), f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]))
        return
    problem = _shape_problem(out, part.num_rows)
    if problem:
        applied.rejected += [(key, problem) for key in part[target.key].to_pylist()]
        return
    assert isinstance(out, (pa.Table, pa.RecordBatch))  # noqa: S101 - _shape_problem said so
    keys = part[target.key]  # as read: the returned key must equal it
    keys_kept = target.key not in out.column_names or _equal(out.column(target.key), keys)
    merged = _merge(part, out)
    if SKIP_COLUMN in out.column_names and pa.types.is_boolean(merged[SKIP_COLUMN].type):
        marks = pc.fill_null(merged[SKIP_COLUMN], False)
        applied.skipped += keys.filter(marks).to_pylist()
        merged, keys = merged.filter(pc.invert(marks)).drop_columns([SKIP_COLUMN]), keys.filter(pc.invert(marks))
    checked = _checked(merged, target, changed=out.column_names) if keys_kept else None
    if checked is None:
        applied.unchecked.append((merged, keys.to_pylist()))
    elif checked.num_rows:
        applied.checked.append(checked)


def _shape_problem(out: object, rows: int) -> str | None:
    if not isinstance(out, (pa.Table, pa.RecordBatch)):
        return (f"batch transform returned {type(out).__name__}, expected a pyarrow.Table of the columns to set, "
                "one row per source row")
    if len(set(out.column_names)) < len(out.column_names):
        return f"batch transform returned a column twice ({sorted(out.column_names)}): return each column once"
    if out.num_rows != rows:
        return f"batch transform returned {out.num_rows} rows for {rows}: return one row per source row, in order"
    return None


def _merge(source: pa.Table, out: pa.Table | pa.RecordBatch) -> pa.Table:
    """The source rows with the returned columns set over them (new columns appended)."""
    merged = source
    for name in out.column_names:
        column = out.column(name)
        at = merged.schema.get_field_index(name)
        merged = merged.set_column(at, name, column) if at >= 0 else merged.append_column(name, column)
    return merged


def _equal(returned: pa.Array | pa.ChunkedArray, keys: pa.ChunkedArray) -> bool:
    try:
        return returned.null_count == 0 and bool(pc.all(pc.equal(returned, keys)).as_py())
    except (pa.ArrowException, TypeError):  # not comparable: another type
        return False


def _checked(merged: pa.Table, target: Target, *, changed: Iterable[str]) -> pa.Table | None:
    """The rows in the target schema if every value fits its column; None if one does not (or a column is unknown)."""
    if set(merged.column_names) - set(target.schema.names):
        return None
    changed = set(changed)
    columns = []
    for spot in target.schema:
        if spot.name not in merged.column_names:  # a declared output column the transform did not return
            if spot.name in target.required:
                return None
            columns.append(pa.nulls(merged.num_rows, spot.type))
            continue
        column = merged[spot.name]
        if spot.name in changed or column.type != spot.type:  # returned, or a source column OUTPUT_COLUMNS retypes
            column = _fits(column, spot, target)
            if column is None:
                return None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=target.schema)


def _fits(column: pa.ChunkedArray, spot: pa.Field, target: Target) -> pa.ChunkedArray | None:
    """The column in its Arrow type if every value fits unchanged; None if one may not (the row checks decide)."""
    if column.type != spot.type:
        if not _exact_cast(column.type, spot.type):
            return None
        try:
            column = column.cast(spot.type, safe=True)
        except arrow_io.CONVERSION_ERRORS:
            return None
    if spot.name in target.required and column.null_count:
        return None
    if pa.types.is_list(spot.type) and pc.list_flatten(column).null_count:
        return None  # an ARRAY cannot hold NULL
    if spot.name in target.json and not all(_is_json(text) for text in column.drop_null().to_pylist()):
        return None
    return column


def _exact_cast(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether Arrow's safe cast from ``source`` to ``target`` keeps every value it does not refuse.

    Not float to decimal (it rounds), nor across kinds (an int as text or as a time, a naive time as UTC
    for a DATETIME), nor STRUCTs (a cast drops unknown fields): those go to the row checks.
    """
    t = pa.types
    kinds = (
        (t.is_integer, lambda x: x == pa.int64() or t.is_decimal(x)),
        (t.is_floating, lambda x: x == pa.float64()),
        (t.is_decimal, t.is_decimal),
        (lambda x: t.is_string(x) or t.is_large_string(x), t.is_string),
        (lambda x: t.is_binary(x) or t.is_large_binary(x), t.is_binary),
        (t.is_date, t.is_date),
        (t.is_time, t.is_time),
        (t.is_timestamp, lambda x: t.is_timestamp(x) and (x.tz is not None or source.tz is None)),
    )
    return any(is_source(source) and fits_target(target) for is_source, fits_target in kinds)


def json_value(text: str) -> Any:
    """A JSON column's text as the row form sees it: the parsed value, ``JSON_NULL`` for a JSON null."""
    return JSON_NULL if text == "null" else parse_json(text)


def parse_json(text: str) -> Any:
    """The JSON text's value; ValueError if BigQuery's PARSE_JSON would refuse it (NaN, Infinity, 1e400)."""
    return json.loads(text, parse_constant=_refuse, parse_float=_finite)


def _refuse(token: str) -> float:
    raise ValueError(f"{token} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is beyond a double")
    return number


def _is_json(text: str) -> bool:
    try:
        parse_json(text)
    except ValueError:
        return False
    return True
