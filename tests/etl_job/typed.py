"""A typed data set: one column of every type a BigQuery table can hold, edge values, NULLs, a STRING key.

Reusable by any path that moves rows (REST + JSON load today; Arrow / Storage APIs later): ``create_source``
builds the source table with the exact values of ``ROWS`` (checked by ``read``), ``read`` reads a table back
in a form ``assert_same`` compares value by value (NaN, JSON null and BYTES included).

What the local BigQuery (bqemulator 1.4.0) cannot hold, and so is not in ``SCHEMA`` but checked on the
wire or in units instead, are named in ``LOCAL_LIMITS``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math

from google.cloud import bigquery

from etl_job import JSON_NULL

S = bigquery.SchemaField
UTC = datetime.UTC

LOCAL_LIMITS = {
    "BIGNUMERIC": "a table with a BIGNUMERIC column cannot be created (HTTP 500: DuckDB decimals stop at width 38)",
    "GEOGRAPHY": "a query reading a GEOGRAPHY column fails offline (the spatial extension cannot be installed)",
    "BYTES in a JSON load": "stored as the base64 text instead of decoded; the job stages BYTES as base64 text "
                            "and decodes it with FROM_BASE64 in the INSERT, a path the local BigQuery decodes",
    "JSON null in a JSON load": "read as SQL NULL (by BigQuery too); the job stages JSON as text and uses "
                                "PARSE_JSON in the INSERT",
    "NaN / Infinity in a JSON load": "bare tokens are accepted here (BigQuery rejects them: not JSON); the test "
                                     "checks that the job sends the strings BigQuery reads",
    "Parquet columns by position": "a Parquet load fills the table's columns in the file's order (BigQuery matches "
                                   "them by name); the test checks the job writes the staging table's order",
}

SCHEMA = [
    S("key", "STRING", mode="REQUIRED"),
    S("i", "INT64"),
    S("f", "FLOAT64"),
    S("n", "NUMERIC"),
    S("b", "BOOL"),
    S("s", "STRING"),
    S("bs", "BYTES"),
    S("d", "DATE"),
    S("dt", "DATETIME"),
    S("t", "TIME"),
    S("ts", "TIMESTAMP"),
    S("j", "JSON"),
    S("ai", "INT64", mode="REPEATED"),
    S("st", "RECORD", fields=[S("x", "INT64"), S("y", "STRING"), S("z", "TIMESTAMP")]),
    S("ast", "RECORD", mode="REPEATED", fields=[S("name", "STRING"), S("tags", "STRING", mode="REPEATED")]),
]
_NULL_ROW = {field.name: [] if field.mode == "REPEATED" else None for field in SCHEMA}

ROWS = [
    {
        "key": "a 'quoted' \"key\"", "i": 2**63 - 1, "f": math.nan, "n": decimal.Decimal("99999999999999999999999999999.999999999"),
        "b": True, "s": 'line one\nline "two"\r\n\ttab \\ backslash, emoji \U0001f600, nul-free',
        "bs": b"\x00\xff\x10 binary\n", "d": datetime.date(1, 1, 1), "dt": datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        "t": datetime.time(0, 0, 0, 1), "ts": datetime.datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
        "j": {"nested": [1, None, "x", {"deep": True}], "n": 1.5}, "ai": [-(2**63), 0, 2**63 - 1],
        "st": {"x": -1, "y": "struct \"string\"", "z": datetime.datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC)},
        "ast": [{"name": "first", "tags": ["p", "q"]}, {"name": None, "tags": []}],
    },
    {
        "key": "b", "i": -(2**63), "f": math.inf, "n": decimal.Decimal("-0.000000001"), "b": False, "s": "",
        "bs": b"", "d": datetime.date(9999, 12, 31), "dt": datetime.datetime(1, 1, 1, 0, 0, 0),
        "t": datetime.time(23, 59, 59, 999999), "ts": datetime.datetime(1, 1, 1, 0, 0, tzinfo=UTC),
        "j": JSON_NULL, "ai": [], "st": {"x": None, "y": None, "z": None}, "ast": [],
    },
    {
        "key": "c", "i": 0, "f": -math.inf, "n": decimal.Decimal("0"), "b": None, "s": "null",
        "bs": bytes(range(256)), "d": datetime.date(1970, 1, 1), "dt": datetime.datetime(1969, 12, 31, 23, 59, 59, 500000),
        "t": datetime.time(12, 0), "ts": datetime.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
        "j": "null", "ai": [7], "st": None, "ast": [{"name": "only", "tags": ["\n"]}],
    },
    {
        "key": "d", "i": 9007199254740993, "f": -0.0, "n": decimal.Decimal("1.5"), "b": True, "s": "\u00e9\u4e2d",
        "bs": b"=", "d": datetime.date(2000, 2, 29), "dt": datetime.datetime(2000, 1, 1, 0, 0, 0, 1),
        "t": datetime.time(1, 2, 3), "ts": datetime.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "j": [1, 2.5, "three", False, None], "ai": [1, 1, 1], "st": {"x": 2**53 + 1, "y": "", "z": None},
        "ast": [{"name": "n", "tags": []}] * 2,
    },
    {"key": "e", "f": 5e-324, "j": {}, "s": "x" * 10_000, "n": decimal.Decimal("-99999999999999999999999999999.999999999")},
    {**_NULL_ROW, "key": "nulls"},
]
ROWS = [{**_NULL_ROW, **row} for row in ROWS]


def create_source(client, table: str, *, without: tuple[str, ...] = ()) -> None:
    """Create ``table`` with SCHEMA holding exactly ROWS (both ``without`` the columns named).

    A JSON load would store BYTES as base64 text and JSON null as SQL NULL here, so rows are loaded
    with those columns as text into a scratch table, then copied with FROM_BASE64 and PARSE_JSON.
    """
    scratch = f"{table}_typed_scratch"
    fields = [f for f in SCHEMA if f.name not in without]
    text_schema = [S(f.name, "STRING", mode=f.mode) if f.name in ("bs", "j") else f for f in fields]
    client.create_table(bigquery.Table(table, schema=fields))
    client.create_table(bigquery.Table(scratch, schema=text_schema))
    config = bigquery.LoadJobConfig(schema=text_schema, source_format="NEWLINE_DELIMITED_JSON")
    rows = [{name: value for name, value in _as_text(row).items() if name not in without} for row in ROWS]
    client.load_table_from_json(rows, scratch, job_config=config).result()
    parsed = ", ".join(f"{call}({c}) AS {c}" for c, call in (("bs", "FROM_BASE64"), ("j", "PARSE_JSON")) if c not in without)
    client.query(f"INSERT INTO `{table}` SELECT * REPLACE ({parsed}) FROM `{scratch}`").result()
    client.delete_table(scratch)


def _as_text(row: dict) -> dict:
    out = {}
    for name, value in row.items():
        if name == "bs" and value is not None:
            value = base64.b64encode(value).decode()
        elif name == "j" and value is not None:
            value = "null" if value is JSON_NULL else json.dumps(value)
        out[name] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        return str(value)
    if isinstance(value, (datetime.date, datetime.time, decimal.Decimal)):
        return value.isoformat() if not isinstance(value, decimal.Decimal) else str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read(client, table: str, columns: list[str] | None = None) -> list[dict]:
    """The table's rows of SCHEMA's columns, ordered by key; JSON as JSON_NULL / parsed values, as ROWS holds it."""
    names = columns or [f.name for f in SCHEMA]
    select = ", ".join(f"IF(`{n}` IS NULL, NULL, TO_JSON_STRING(`{n}`)) AS `{n}`" if n == "j" else f"`{n}`"
                       for n in names)
    rows = [dict(r.items()) for r in client.query(f"SELECT {select} FROM `{table}` ORDER BY key").result()]
    for row in rows:
        if row.get("j") is not None:
            row["j"] = JSON_NULL if row["j"] == "null" else json.loads(row["j"])
    return rows


def assert_same(actual: list[dict], expected: list[dict] = ROWS) -> None:
    """Value by value, naming the first difference; NaN equals NaN, -0.0 keeps its sign, types must match."""
    expected = sorted(expected, key=lambda row: row["key"])
    assert [r["key"] for r in actual] == [r["key"] for r in expected]
    for got, want in zip(actual, expected):
        for name in want:
            assert _same(got[name], want[name]), f"row {want['key']!r} column {name!r}: {got[name]!r} != {want[name]!r}"


def _same(got, want) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and (math.isnan(got) and math.isnan(want) or
                                           (got == want and math.copysign(1, got) == math.copysign(1, want)))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    return type(got) is type(want) and got == want
