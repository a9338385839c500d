"""Real tables, real mistakes: the real job process on shapes a user's tables and transforms take."""

from __future__ import annotations

import functools
import json
import time

import pytest
from google.cloud import bigquery

from dev.local_bigquery import PROJECT
from etl_job import bigquery_io, config, credentials, pipeline, schema, stopping
from tests.support import (
    FAST_CALL_LIMITS,
    ROOT,
    TRANSFORMS,
    assert_no_traceback,
    business_columns,
    expected_rows,
    log_lines,
    source_row,
    source_schema,
    transform_module,
)


def tables(job) -> list[str]:
    return sorted(t.table_id for t in job.client.list_tables(job.dataset))


def error_message(done) -> str:
    (error,) = [line for line in log_lines(done.stderr) if line["level"] == "ERROR"]
    return error["message"]


@pytest.mark.parametrize("transform", ["only_changes", "changes_with_key"])
def test_a_transform_returning_only_what_it_changes_keeps_every_other_column(job, transform):
    job.seed(30)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:{transform}")

    assert done.returncode == 0, done.stderr
    rows = job.rows()
    assert business_columns(rows) == expected_rows(30)
    assert all(r["created_at"] is not None for r in rows)


def test_skipped_rows_are_counted_recorded_and_not_read_again(job):
    job.seed(30)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:only_does")

    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in job.rows()] == list(range(3, 31, 3))
    end = log_lines(done.stderr)[-1]
    assert (end["rows_read"], end["rows_loaded"], end["rows_skipped"], end["rows_failed"]) == (30, 10, 20, 0)
    skipped = job.rows(f"{job.destination}_skipped")
    assert sorted(r["id"] for r in skipped) == [i for i in range(1, 31) if i % 3]
    assert {r["run_id"] for r in skipped} == {end["run_id"]}

    again = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:only_does")

    assert again.returncode == 0, again.stderr
    assert log_lines(again.stderr)[-1]["rows_read"] == 0  # neither loaded nor skipped keys are read again


def test_a_transform_returning_none_is_a_row_error_naming_skip(job):
    job.seed(5)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:returns_none")

    assert done.returncode == 3
    errors = job.rows(job.errors)
    assert len(errors) == 5 and job.count() == 0
    assert errors[0]["error"].startswith("transform returned NoneType, expected a dict of the columns to set "
                                         "(or etl_job.SKIP")


def test_a_value_that_does_not_fit_its_column_is_a_row_error_and_the_rest_of_its_batch_loads(job):
    job.create_source([source_row(i) for i in range(1, 101)], key_mode="REQUIRED")

    done = job.run(ETL_TRANSFORM="tests.etl_job.sentiment:bad_length", ETL_BATCH_SIZE="50")

    assert done.returncode == 3, done.stderr
    assert_no_traceback(done)
    assert [r["id"] for r in job.rows()] == [i for i in range(1, 101) if i % 7]
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == list(range(7, 101, 7))
    first = errors[0]
    assert set(first) == {"id", "column", "error", "value", "run_id", "failed_at"}
    assert (first["column"], first["value"]) == ("name_length", "'n/a'")
    assert first["error"] == "value does not fit column name_length: expected an integer, got str (INT64)"
    assert first["run_id"] == log_lines(done.stderr)[-1]["run_id"] and first["failed_at"] is not None

    fixed = job.run(ETL_TRANSFORM="tests.etl_job.sentiment:transform")  # the next run retries only those rows

    assert fixed.returncode == 0, fixed.stderr
    assert log_lines(fixed.stderr)[-1]["rows_read"] == 14
    assert [r["id"] for r in job.rows()] == list(range(1, 101))


@pytest.mark.parametrize("storage_api, says", [
    (True, "the row's values do not convert to its columns' types: "),  # Parquet: Arrow refuses it first
    (False, "BigQuery rejected the row: "),  # today's JSON load: the load job refuses it
])
def test_a_load_that_still_rejects_a_row_is_split_until_the_row_is_found(job, local_bigquery, monkeypatch,
                                                                         storage_api, says):
    # Checks in the job catch every bad value this test can make, so they are switched off here to
    # reach the last line of defence: the load refusing the batch.
    monkeypatch.setattr(schema, "row_problem", lambda row, checks: None)
    monkeypatch.setattr(pipeline, "STORAGE_API", storage_api)
    job.create_source([source_row(i) for i in range(1, 201)], key_mode="REQUIRED")
    settings = config.load_config({"ETL_SOURCE_TABLE": job.source, "ETL_DESTINATION_TABLE": job.destination,
                                   "ETL_BATCH_SIZE": "200"})
    bq = bigquery_io.BigQuery(credentials.resolve({"BIGQUERY_EMULATOR_HOST": local_bigquery.url}), project=PROJECT,
                              storage_endpoint=local_bigquery.grpc)
    loads = []
    for name in ("load_rows", "load_parquet"):
        monkeypatch.setattr(bq, name, functools.partial(_counted, getattr(bq, name), loads))
    transform, output = config.import_transform(f"{TRANSFORMS}:bad_score_for_multiples_of_97")

    result = pipeline.run(settings, bq, transform, stopping.Stop(), output_columns=output)

    assert (result.rows_loaded, result.rows_failed, result.complete) == (198, 2, True)
    assert [r["id"] for r in job.rows()] == [i for i in range(1, 201) if i % 97]
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == [97, 194]
    assert all(e["error"].startswith(says) for e in errors), errors
    assert all(f"'score': 'not a number {e['id']}'" in e["value"] for e in errors)
    # Bounded: a binary split costs at most 2 loads per level per bad row (8 levels for 200 rows), plus
    # the errors table's load; not one load job per row.
    assert len(loads) <= 2 * 2 * 8 + 1, loads


def _counted(load, loads: list, rows, *args, **kwargs):
    loads.append(len(rows))
    return load(rows, *args, **kwargs)


@pytest.mark.parametrize("column", ["run_id", pipeline.COPIES])  # a lineage column; the extract's count of a key
def test_a_source_with_a_column_the_job_writes_stops_before_anything_is_written(job, column):
    schema_with_it = [*source_schema(), bigquery.SchemaField(column, "STRING")]
    job.client.create_table(bigquery.Table(job.source, schema=schema_with_it))
    job.client.load_table_from_json([{**source_row(1), column: "theirs"}], job.source,
                                    job_config=bigquery.LoadJobConfig(schema=schema_with_it)).result()

    done = job.run()

    assert done.returncode == 1
    assert_no_traceback(done)
    message = error_message(done)
    assert message.startswith(f"source table {job.source} has columns ['{column}'], which the job writes itself")
    assert f"SELECT * EXCEPT ({column}), {column} AS source_{column} FROM" in message
    assert tables(job) == ["source"]


def test_a_transform_writing_a_lineage_column_is_a_row_error(job):
    job.seed(2)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:sets_run_id")

    assert done.returncode == 3
    assert {e["column"] for e in job.rows(job.errors)} == {"run_id"}


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        (lambda s: [f for f in s if f.name != "created_at"],
         "it lacks columns ['created_at']: add them (ALTER TABLE `{table}` ADD COLUMN `created_at` TIMESTAMP;"),
        (lambda s: [bigquery.SchemaField("name", "INT64") if f.name == "name" else f for f in s],
         "its column `name` is INT64 but the job writes STRING: recreate the destination with that type, or "
         "declare the type it holds in OUTPUT_COLUMNS if the transform converts the value"),
        (lambda s: [bigquery.SchemaField("score", "INT64") if f.name == "score" else f for f in s],
         "its column `score` is INT64 but the job writes NUMERIC: ALTER TABLE `{table}` ALTER COLUMN `score` SET "
         "DATA TYPE NUMERIC"),
        (lambda s: [bigquery.SchemaField("name", "STRING", mode="REQUIRED") if f.name == "name" else f for f in s],
         "its column `name` is REQUIRED but the job's may be NULL: ALTER TABLE `{table}` ALTER COLUMN `name` "
         "DROP NOT NULL"),
    ],
    ids=["missing-column", "narrower-type", "widenable-type", "required"],
)
def test_a_destination_that_does_not_fit_stops_the_run_before_anything_is_written(job, destination, message):
    job.seed(20)
    lineage = [bigquery.SchemaField("run_id", "STRING"), bigquery.SchemaField("processed_at", "TIMESTAMP")]
    job.client.create_table(bigquery.Table(job.destination, schema=destination(source_schema()) + lineage))

    done = job.run()

    assert done.returncode == 1
    assert_no_traceback(done)
    text = error_message(done)
    assert text.startswith(f"destination table {job.destination} (ETL_DESTINATION_TABLE) does not fit what the job "
                           "writes: ")
    assert message.format(table=job.destination) in text
    assert "\n" not in text
    assert tables(job) == ["destination", "source"] and job.count() == 0


def test_an_endpoint_that_accepts_and_never_answers_fails_in_about_a_minute_naming_connectivity(job, holding_proxy):
    # The real limits (a minute) scaled down to seconds; the code path is the same.
    default_timeout_minutes = json.loads((ROOT / "cdk.json").read_text())["context"]["defaults"]["timeout_minutes"]
    assert bigquery_io.call_limit() <= 90 < default_timeout_minutes * 60
    job.seed(5)
    proxy = holding_proxy(b"")  # every request: accepted, never answered
    started = time.monotonic()

    done = job.run(timeout=60, BIGQUERY_EMULATOR_HOST=proxy.url, settings=FAST_CALL_LIMITS)

    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20
    assert_no_traceback(done)
    message = error_message(done)
    assert message.startswith(f"BigQuery at {proxy.url} did not answer (")
    assert "a connectivity problem; check the task's network path" in message
    assert not any(line["message"].startswith("job timed out") for line in log_lines(done.stderr))


def test_repeated_and_struct_output_columns_load(job, tmp_path):
    job.seed(4)
    env = transform_module(tmp_path, "nested_transform",
        "OUTPUT_COLUMNS = {'tags': 'ARRAY<STRING>', 'address': 'STRUCT<city STRING, lines ARRAY<STRING>>',\n"
        "                  'visits': 'ARRAY<STRUCT<n INT64, ok BOOL>>'}\n"
        "def transform(row):\n"
        "    i = row['id']\n"
        "    return {'tags': ['t'] * i, 'address': {'city': f'c{i}', 'lines': [str(i), '']},\n"
        "            'visits': [{'n': i, 'ok': i % 2 == 0}]}\n")

    done = job.run(**env)

    assert done.returncode == 0, done.stderr
    rows = job.rows()
    assert [(r["tags"], r["address"], r["visits"]) for r in rows[:2]] == [
        (["t"], {"city": "c1", "lines": ["1", ""]}, [{"n": 1, "ok": False}]),
        (["t", "t"], {"city": "c2", "lines": ["2", ""]}, [{"n": 2, "ok": True}]),
    ]


def test_a_misspelt_output_column_type_is_one_clear_error(job, tmp_path):
    job.seed(2)
    env = transform_module(tmp_path, "typo_transform", "OUTPUT_COLUMNS = {'sentiment': 'FLAOT64'}\n"
                                                       "def transform(row):\n    return {'sentiment': 0.5}\n")

    done = job.run(**env)

    assert done.returncode == 1
    assert_no_traceback(done)
    assert error_message(done).startswith("typo_transform.OUTPUT_COLUMNS['sentiment']='FLAOT64' is invalid: "
                                          "'FLAOT64' is not a BigQuery type (did you mean FLOAT64? ")
    assert tables(job) == ["source"]
