"""Every BigQuery type through the real job, compared value by value, and what the job sends on the wire."""

from __future__ import annotations

import base64
import decimal
import io
import json
import math
import re

import pyarrow.parquet as pq
import pytest

from etl_job import bigquery_io, pipeline, schema
from tests.etl_job import typed
from tests.support import TRANSFORMS, log_lines, log_messages, transform_module

UNCHANGED = f"{TRANSFORMS}:unchanged"
REST_PATH = {"etl_job.pipeline.STORAGE_API": False}


def _strict_json(line: bytes) -> dict:
    def refuse(token):
        raise AssertionError(f"bare {token} token on the wire: not JSON, BigQuery's JSON loader rejects it")

    return json.loads(line, parse_constant=refuse)


def ndjson_rows(bodies: list[bytes]) -> list[dict]:
    """The rows of every JSON load job the job uploaded (the NDJSON part of each multipart upload body)."""
    rows = []
    for body in bodies:
        if b"NEWLINE_DELIMITED_JSON" not in body:
            continue
        for line in body.splitlines():
            if line.startswith(b"{") and b'"configuration"' not in line:
                rows.append(_strict_json(line))
    return rows


def parquet_tables(bodies: list[bytes]) -> list:
    """The Parquet files of every Parquet load job the job uploaded (the file part of each multipart upload body)."""
    files = [body[body.index(b"PAR1"):body.rindex(b"PAR1") + 4] for body in bodies
             if b"PARQUET" in body and b"PAR1" in body]
    return [pq.read_table(io.BytesIO(file)) for file in files]


def test_every_type_arrives_value_for_value_on_the_default_path_and_parquet_holds_them_natively(job, recording_proxy):
    typed.create_source(job.client, job.source)

    done = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url, ETL_TRANSFORM=UNCHANGED, ETL_KEY_COLUMN="key",
                   ETL_BATCH_SIZE="4")

    assert done.returncode == 0, (done.stderr, job.rows(job.errors) if done.returncode == 3 else None)
    typed.assert_same(typed.read(job.client, job.destination))
    destination = job.client.get_table(job.destination).schema
    assert [schema.describe(f) for f in destination[:len(typed.SCHEMA)]] == [schema.describe(f) for f in typed.SCHEMA]
    # The wire: Parquet carries NaN, infinities, 64-bit integers and bytes as they are. The local BigQuery
    # reads a Parquet file's columns by position (LOCAL_LIMITS), BigQuery by name: the job writes both.
    assert "Parquet columns by position" in typed.LOCAL_LIMITS
    tables = parquet_tables(recording_proxy.bodies)
    staging = [f.name for f in destination]
    assert tables and all(table.column_names == staging for table in tables)
    staged = {row["key"]: row for table in tables for row in table.to_pylist()}
    assert staged.keys() == {row["key"] for row in typed.ROWS}
    first, second, third = staged[typed.ROWS[0]["key"]], staged["b"], staged["c"]
    assert math.isnan(first["f"]) and (second["f"], third["f"]) == (math.inf, -math.inf)
    assert (first["i"], second["i"], staged["d"]["i"]) == (2**63 - 1, -(2**63), 9007199254740993)
    assert third["bs"] == bytes(range(256))  # BYTES as bytes: no base64 on this path
    assert (second["j"], third["j"], staged["nulls"]["j"]) == ("null", '"null"', None)  # JSON null, a string, NULL
    assert first["n"] == decimal.Decimal("99999999999999999999999999999.999999999")

    again = job.run(ETL_TRANSFORM=UNCHANGED, ETL_KEY_COLUMN="key")
    assert again.returncode == 0, again.stderr
    assert log_lines(again.stderr)[-1]["rows_read"] == 0
    typed.assert_same(typed.read(job.client, job.destination))


@pytest.mark.parametrize("transform", ["unchanged_batch", "every_column_batch"])
def test_every_type_arrives_value_for_value_through_the_batch_form(job, transform):
    # unchanged_batch returns no column (every value passes through as read); every_column_batch returns
    # them all, so each column goes through the column checks (a cast to its type, JSON text parsed).
    typed.create_source(job.client, job.source)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:{transform}", ETL_KEY_COLUMN="key", ETL_BATCH_SIZE="4")

    assert done.returncode == 0, (done.stderr, job.rows(job.errors) if done.returncode == 3 else None)
    typed.assert_same(typed.read(job.client, job.destination))
    assert log_lines(done.stderr)[-1]["rows_checked_by_row"] == 0  # every type passed the column checks


@pytest.mark.parametrize("transform", ["unchanged", "every_column_batch"])
def test_every_type_but_json_arrives_value_for_value_when_a_first_run_reads_the_source_as_it_is(job, transform):
    # The extract reads JSON as its text: a source with a JSON column is always extracted; this one has none.
    typed.create_source(job.client, job.source, without=("j",))

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:{transform}", ETL_KEY_COLUMN="key", ETL_BATCH_SIZE="4")

    assert done.returncode == 0, (done.stderr, job.rows(job.errors) if done.returncode == 3 else None)
    assert pipeline.READ_AS_IT_IS in log_messages(done)
    columns = [f.name for f in typed.SCHEMA if f.name != "j"]
    typed.assert_same(typed.read(job.client, job.destination, columns),
                      [{name: row[name] for name in columns} for row in typed.ROWS])


def test_every_type_arrives_value_for_value_on_the_rest_path_and_the_wire_holds_only_json(job, recording_proxy):
    # Today's algorithm before the Storage APIs (pipeline.STORAGE_API=False), kept for `make bench`.
    typed.create_source(job.client, job.source)
    typed.assert_same(typed.read(job.client, job.source))

    done = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url, ETL_TRANSFORM=UNCHANGED, ETL_KEY_COLUMN="key",
                   ETL_BATCH_SIZE="4", settings=REST_PATH)

    assert done.returncode == 0, (done.stderr, job.rows(job.errors) if done.returncode == 3 else None)
    typed.assert_same(typed.read(job.client, job.destination))

    # The wire: the local BigQuery accepts bare NaN/Infinity tokens, so what was sent is checked here.
    staged = {row["key"]: row for row in ndjson_rows(recording_proxy.bodies) if "run_id" in row}
    assert staged.keys() == {row["key"] for row in typed.ROWS}
    first, second, third = staged[typed.ROWS[0]["key"]], staged["b"], staged["c"]
    assert (first["f"], second["f"], third["f"]) == ("NaN", "Infinity", "-Infinity")
    assert (first["i"], second["i"], staged["d"]["i"]) == (str(2**63 - 1), str(-(2**63)), "9007199254740993")
    assert first["ai"] == [str(-(2**63)), 0, str(2**63 - 1)]
    assert base64.b64decode(third["bs"]) == bytes(range(256))  # BYTES: base64, decoded by FROM_BASE64 in the INSERT
    assert (second["j"], third["j"], staged["nulls"]["j"]) == ("null", '"null"', None)  # JSON null, a string, NULL
    assert first["n"] == "99999999999999999999999999999.999999999" and first["ts"] == "1969-07-20T20:17:40.123456+00:00"


def test_geography_the_local_bigquery_cannot_read_is_checked_on_the_wire(job, recording_proxy, tmp_path):
    # LOCAL_LIMITS["GEOGRAPHY"]: a query reading a GEOGRAPHY column fails here, so the column is one the
    # transform adds (written, never read back) and the value is checked on the wire.
    assert "GEOGRAPHY" in typed.LOCAL_LIMITS
    job.seed(3)
    env = transform_module(tmp_path, "geo_transform", "OUTPUT_COLUMNS = {'place': 'GEOGRAPHY'}\n"
                                                      "def transform(row):\n    return {'place': f\"POINT({row['id']} 52.5)\"}\n")

    done = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url, **env)

    assert done.returncode == 0, done.stderr
    assert job.count() == 3
    places = [row["place"] for table in parquet_tables(recording_proxy.bodies) for row in table.to_pylist()]
    assert sorted(places) == ["POINT(1 52.5)", "POINT(2 52.5)", "POINT(3 52.5)"]


def test_bignumeric_the_local_bigquery_cannot_create_is_checked_where_the_job_encodes_it():
    # LOCAL_LIMITS["BIGNUMERIC"]: no table can hold it here; the job's check and wire encoding are the evidence.
    assert "BIGNUMERIC" in typed.LOCAL_LIMITS
    check = schema.value_check(schema.parse_type("v", "BIGNUMERIC"))
    largest = decimal.Decimal("578960446186580977117854925043439539266.34992332820282019728792003956564819967")
    smallest_step = decimal.Decimal("-0." + "0" * 37 + "1")
    assert check(largest) is None and check(smallest_step) is None
    assert "out of BIGNUMERIC's range" in check(decimal.Decimal("578960446186580977117854925043439539267"))[1]
    assert "more than 38 decimal places" in check(decimal.Decimal("1e-39"))[1]
    assert bigquery_io.to_json(largest) == str(largest)  # exact: a string, never a float
    assert re.fullmatch(r"-0\.0{37}1", bigquery_io.to_json(smallest_step))
