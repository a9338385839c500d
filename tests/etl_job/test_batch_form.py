"""The batch form of the transform (``etl_job.arrow_transform``) through the real job process: the same rows as the
row form, and the same guarantees (reruns, kills, failing rows, values that do not fit, NULL and duplicate keys)."""

from __future__ import annotations

import decimal

import pytest
from google.cloud import bigquery

from etl_job.config import BATCH_TRANSFORM
from etl_job.runs import LINEAGE
from tests.support import (
    TRANSFORMS,
    assert_no_traceback,
    business_columns,
    expected_rows,
    kill_after_first_batch,
    log_lines,
    sigterm_after_batches,
    source_row,
    source_schema,
    transform_module,
)


def test_the_batch_form_loads_the_same_rows_as_the_row_form_and_a_rerun_adds_nothing(job):
    job.seed(3000)

    done = job.run(ETL_TRANSFORM=BATCH_TRANSFORM, ETL_BATCH_SIZE="97")

    assert done.returncode == 0, done.stderr
    rows = job.rows()
    assert business_columns(rows) == expected_rows(3000)
    assert len({r["run_id"] for r in rows}) == 1 and all(r["processed_at"] for r in rows)
    assert [line["batch"] for line in log_lines(done.stderr) if line["message"] == "batch done"][-1] == 31
    again = job.run(ETL_TRANSFORM=BATCH_TRANSFORM)
    assert again.returncode == 0, again.stderr
    assert job.rows() == rows


def test_rows_a_batch_raises_for_are_found_by_halving_and_the_rest_of_the_batch_loads(job):
    job.seed(100)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:fail_on_multiples_of_7_batch", ETL_BATCH_SIZE="40")

    assert done.returncode == 3, done.stderr
    assert_no_traceback(done)
    assert business_columns(job.rows()) == [r for r in expected_rows(100) if r["id"] % 7]
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == list(range(7, 101, 7))
    assert all(e["error"] == f"ValueError: no service for id {e['id']}" for e in errors)
    fixed = job.run(ETL_TRANSFORM=BATCH_TRANSFORM)
    assert fixed.returncode == 0, fixed.stderr
    assert business_columns(job.rows()) == expected_rows(100)


@pytest.mark.parametrize(("transform", "column", "value", "reason"), [
    # Arrow refuses it (beyond decimal128(38, 9)): the part goes to the row checks.
    ("huge_score_for_multiples_of_97_batch", "score", "1e+30", "out of NUMERIC's range, got float (NUMERIC)"),
    # Arrow would round it silently (a float cast to a decimal): the row checks refuse it, as on the row form.
    ("precise_score_batch", "score", "{i}.1234567891", "more than 9 decimal places (NUMERIC); round it, got float "
                                                       "(NUMERIC)"),
])
def test_a_value_that_does_not_fit_its_column_rejects_its_row_only_with_the_column_and_reason(
        job, transform, column, value, reason):
    job.seed(200)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:{transform}", ETL_BATCH_SIZE="50")

    assert done.returncode == 3, done.stderr
    assert business_columns(job.rows()) == [r for r in expected_rows(200) if r["id"] % 97]
    errors = sorted(job.rows(job.errors), key=lambda e: e["id"])
    assert [(e["id"], e["column"], e["value"]) for e in errors] == [
        (i, column, value.format(i=i)) for i in (97, 194)]
    assert all(e["error"] == f"value does not fit column {column}: {reason}" for e in errors)
    end = log_lines(done.stderr)[-1]
    assert end["rows_checked_by_row"] == 200  # a float for a NUMERIC is never cast by Arrow: the row checks decide


def test_a_value_that_cannot_become_a_python_value_rejects_its_part_of_the_batch_with_the_reason(job):
    job.seed(200)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:nanosecond_times_batch", ETL_BATCH_SIZE="50")

    assert done.returncode == 3, done.stderr
    assert_no_traceback(done)
    errors = job.rows(job.errors)
    assert {97, 194} <= {e["id"] for e in errors} and len(errors) <= 100  # at most the two batches holding them
    assert all(e["error"].startswith("the batch transform's values do not convert to Python values: ")
               for e in errors)
    assert job.count() + len(errors) == 200  # the batches whose nanoseconds are whole microseconds load


def test_json_text_bigquery_would_refuse_is_a_row_error_not_a_failed_insert(job, tmp_path):
    job.seed(20)
    env = transform_module(tmp_path, "json_batch",
                           "import pyarrow as pa\nfrom etl_job import batch_transform\n"
                           "OUTPUT_COLUMNS = {'doc': 'JSON'}\n"
                           "@batch_transform\ndef transform(rows):\n"
                           "    docs = ['{\"a\": NaN}' if i % 5 == 0 else '{\"a\": 1}' for i in rows['id'].to_pylist()]\n"
                           "    return pa.table({'doc': pa.array(docs, pa.string())})\n")

    done = job.run(**env)

    assert done.returncode == 3, done.stderr
    assert [r["id"] for r in job.rows()] == [i for i in range(1, 21) if i % 5]
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == [5, 10, 15, 20]
    assert all(e["column"] == "doc" and "NaN" in e["value"] for e in errors)


def test_a_destination_with_a_column_after_the_lineage_columns_loads(job):
    # The job's own fix for a missing column (ALTER TABLE ... ADD COLUMN) puts it after run_id and processed_at.
    job.seed(10)
    schema = [*source_schema(), *LINEAGE, bigquery.SchemaField("note", "STRING")]
    job.client.create_table(bigquery.Table(job.destination, schema=schema))

    done = job.run(ETL_TRANSFORM=BATCH_TRANSFORM)

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(10)
    assert all(r["run_id"] and r["note"] is None for r in job.rows())


def test_a_changed_key_and_a_result_of_the_wrong_shape_are_row_errors(job):
    job.seed(5)

    changed = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:change_key_batch")

    assert changed.returncode == 3, changed.stderr
    assert [r["id"] for r in job.rows()] == [1, 3, 4, 5]
    (error,) = job.rows(job.errors)
    assert error["id"] == 2 and "changed the key column" in error["error"]

    nothing = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:returns_none_batch")

    assert nothing.returncode == 3, nothing.stderr
    assert_no_traceback(nothing)
    # Only id 2 was left to read.
    assert [(e["id"], e["error"]) for e in job.rows(job.errors) if "NoneType" in e["error"]] == [
        (2, "batch transform returned NoneType, expected a pyarrow.Table of the columns to set, one row per source row")]


def test_the_skip_column_records_its_rows_as_skipped_and_they_are_not_read_again(job):
    job.seed(30)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:only_does_batch", ETL_BATCH_SIZE="7")

    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in job.rows()] == list(range(3, 31, 3))
    assert all("Das" in r["name"] for r in job.rows())
    skipped = job.destination + "_skipped"
    assert sorted(r["id"] for r in job.rows(skipped)) == [i for i in range(1, 31) if i % 3]
    assert log_lines(done.stderr)[-1]["rows_skipped"] == 20
    again = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:only_does_batch")
    assert log_lines(again.stderr)[-1]["rows_read"] == 0


def test_a_run_killed_after_a_batch_is_completed_exactly_by_the_next(job):
    job.seed(400)
    kill_after_first_batch(job.start(ETL_TRANSFORM=f"{TRANSFORMS}:slow_batch", ETL_BATCH_SIZE="20"))

    done = job.run(ETL_TRANSFORM=BATCH_TRANSFORM)

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(400)


def test_null_and_duplicate_keys_are_counted_and_recorded_as_on_the_row_form(job):
    rows = [source_row(i) for i in range(1, 31)] + [{**source_row(0), "id": None}] * 2
    rows += [{**source_row(5), "name": "Copy A"}, source_row(17)]
    job.create_source(rows)

    done = job.run(ETL_TRANSFORM=BATCH_TRANSFORM, ETL_BATCH_SIZE="7")

    assert done.returncode == 3, done.stderr
    assert business_columns(job.rows()) == expected_rows(30)
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == [5, 17]
    assert {e["error"] for e in errors} == {
        "duplicate key in source: 2 source rows have this key; one of them was processed"}
    end = log_lines(done.stderr)[-1]
    assert (end["rows_loaded"], end["rows_duplicate_key"], end["rows_null_key"]) == (30, 2, 2)
    assert decimal.Decimal("5.25") == next(r for r in job.rows() if r["id"] == 5)["score"]


def test_sigterm_stops_the_batch_form_cleanly_and_the_next_run_completes_exactly(job):
    job.seed(600)
    process = job.start(ETL_TRANSFORM=f"{TRANSFORMS}:slow_batch", ETL_BATCH_SIZE="20")
    stderr = sigterm_after_batches(process, 2)

    assert process.returncode == 143, stderr
    end = log_lines(stderr)[-1]
    assert end["exit_code"] == 143 and 40 <= end["rows_loaded"] == job.count() < 600  # the gathered rows landed
    assert [t.table_id for t in job.client.list_tables(job.dataset) if "staging" in t.table_id] == []
    done = job.run(ETL_TRANSFORM=BATCH_TRANSFORM)
    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(600)
