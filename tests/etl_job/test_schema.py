"""Unit tests for ``etl_job.schema``: the checks a value passes before it is sent, and the wire encoding."""

from __future__ import annotations

import datetime
import decimal
import json
import math

import pytest
from google.cloud import bigquery

from etl_job import JSON_NULL, bigquery_io, schema

S = bigquery.SchemaField


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("INT64", [0, -(2**63), 2**63 - 1, "42"], [2**63, 1.5, True, "4x2", "1e3"]),
        ("FLOAT64", [1.5, 1, math.nan, -math.inf, "NaN", "Infinity", "-Infinity", decimal.Decimal("1.5")],
         ["nan", "1.5", False]),
        ("NUMERIC", [decimal.Decimal("99999999999999999999999999999.999999999"), 1, "1.5", 0.25],
         [decimal.Decimal("1e29"), decimal.Decimal("0.0000000001"), math.nan, "abc", True]),
        ("BOOL", [True, False], [1, "true"]),
        ("STRING", ["", "a\nb"], [1, b"x"]),
        ("BYTES", [b"", bytearray(b"x")], ["AAE="]),
        ("DATE", [datetime.date(1, 1, 1), "2024-02-29"], [datetime.datetime(2024, 1, 1), "2023-02-29", 20240101]),
        ("DATETIME", [datetime.datetime(2024, 1, 1), "2024-01-01 05:00:00.123456"],
         [datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), "2024-01-01T05:00:00Z", datetime.date(2024, 1, 1)]),
        ("TIME", [datetime.time(23, 59, 59, 999999), "12:00:00"], ["25:00:00", 3600]),
        ("TIMESTAMP", [datetime.datetime(1969, 1, 1, tzinfo=datetime.UTC), "2024-01-01T05:00:00Z"],
         ["yesterday", 1700000000]),
        ("JSON", [JSON_NULL, {"a": [1, None]}, "text", 1, [], None], [{"a": math.nan}, {"a": b"x"}]),
        ("GEOGRAPHY", ["POINT(1 2)"], [(1, 2)]),
    ],
)
def test_each_type_accepts_what_loads_and_rejects_what_would_not(kind, good, bad):
    check = schema.value_check(schema.parse_type("c", kind))
    for value in good:
        assert check(value) is None, (kind, value)
    for value in bad:
        problem = check(value)
        assert problem is not None and problem[1], (kind, value)


def test_nested_values_name_the_path_of_the_bad_value():
    check = schema.value_check(schema.parse_type("c", "ARRAY<STRUCT<a INT64, b ARRAY<STRING>>>"))
    assert check([{"a": 1, "b": ["x"]}, {"a": None, "b": []}]) is None
    assert check([{"a": 1, "b": ["x", None]}]) == ("[0].b[1]", "an ARRAY cannot hold NULL")
    assert check([{"a": "one"}]) == ("[0].a", "expected an integer, got str (INT64)")
    assert check([{"z": 1}]) == ("[0]", "the STRUCT has no field 'z'")
    assert check({"a": 1}) == ("", "expected a list (ARRAY<STRUCT>)")
    assert schema.value_check(S("c", "STRING", mode="REQUIRED"))(None) == ("", "NULL in a REQUIRED column")
    assert schema.value_check(S("c", "STRING"))(JSON_NULL) == ("", "JSON_NULL outside a JSON column")


def test_row_problem_names_column_reason_and_a_short_excerpt():
    checks = schema.row_checks([S("id", "INT64"), S("name", "STRING")])
    assert schema.row_problem({"id": 1, "name": "x"}, checks) is None
    assert schema.row_problem({"id": 1, "name": "y" * 1000}, checks) is None
    column, reason, value = schema.row_problem({"id": "x" * 1000, "name": "y"}, checks)
    assert (column, reason) == ("id", "expected an integer, got str (INT64)")
    assert len(value) == schema.MAX_VALUE_CHARS and value.endswith("...")


def test_non_finite_floats_large_integers_and_decimals_go_on_the_wire_as_bigquery_reads_them():
    row = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "big": 2**63 - 1, "small": -(2**53 - 1),
           "n": decimal.Decimal("1E-9"), "nested": {"x": [math.nan, 2**60]}, "ok": 1.5}
    wire = {k: bigquery_io.to_json(v) for k, v in row.items()}
    assert wire == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "big": "9223372036854775807",
                    "small": -(2**53 - 1), "n": "0.000000001", "nested": {"x": ["NaN", "1152921504606846976"]},
                    "ok": 1.5}
    json.dumps(wire, allow_nan=False)  # valid JSON: no bare NaN / Infinity token


def test_mismatches_name_each_problem_with_its_fix():
    expected = [S("id", "INT64"), S("n", "INT64"), S("s", "STRING"),
                S("r", "RECORD", fields=[S("a", "INT64"), S("b", "STRING")])]
    actual = [S("id", "NUMERIC"), S("n", "NUMERIC"), S("s", "INT64"), S("r", "RECORD", fields=[S("a", "STRING")]),
              S("extra", "STRING", mode="REQUIRED")]
    problems = schema.mismatches(expected, actual, "`p.d.t`", "id")
    assert problems == [
        "its column `id` is NUMERIC but the job writes INT64: recreate the destination with that type, or declare "
        "the type it holds in OUTPUT_COLUMNS if the transform converts the value",
        "its column `s` is INT64 but the job writes STRING: recreate the destination with that type, or declare "
        "the type it holds in OUTPUT_COLUMNS if the transform converts the value",
        "its column `r.a` is STRING but the job writes INT64: recreate the destination with that type, or declare "
        "the type it holds in OUTPUT_COLUMNS if the transform converts the value",
        "its STRUCT column `r` lacks field `b` STRING: add it to the table's schema (bq update --schema) or "
        "recreate the destination",
        "its column `extra` is REQUIRED but the job writes no value there: ALTER TABLE `p.d.t` ALTER COLUMN `extra` "
        "DROP NOT NULL",
    ]  # n: INT64 into NUMERIC is lossless, not a problem; the key must match exactly
