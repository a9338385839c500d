"""The real ``python -m etl_job`` process against a local BigQuery: results, reruns, interruptions, failures."""

from __future__ import annotations

import signal
import time

import pytest
from google.cloud import bigquery

from etl_job import metrics, stopping
from etl_job.pipeline import COPIES, EXTRACTED, READ_AS_IT_IS
from tests.support import (
    DEMO_SQL,
    SLOW,
    TRANSFORMS,
    assert_no_traceback,
    business_columns,
    emf_lines,
    expected_rows,
    kill_after_first_batch,
    log_lines,
    log_messages,
    sigterm_after_batches,
    source_row,
    transform_module,
)


def test_happy_path_loads_every_row_transformed_with_lineage_and_signals_success(job):
    job.seed(250)

    done = job.run()

    assert done.returncode == 0, done.stderr
    rows = job.rows()
    assert business_columns(rows) == expected_rows(250)
    assert sum("Das" in r["name"] for r in rows) == 250 // 3
    assert not any("Doe" in r["name"] for r in rows)
    assert rows[0]["created_at"].isoformat() == "2024-01-02T05:00:00.123456+00:00"
    run_ids = {r["run_id"] for r in rows}
    assert len(run_ids) == 1 and None not in run_ids
    assert all(r["processed_at"] is not None for r in rows)
    assert job.count(job.errors) == 0
    assert [t.table_id for t in job.client.list_tables(job.dataset) if "staging" in t.table_id] == []

    logs = log_lines(done.stderr)
    start, end = logs[0], logs[-1]
    assert start["message"] == "job starting" and start["batch_size"] == 5000 and start["concurrency"] == 64
    assert end["message"] == "job finished" and end["rows_loaded"] == 250 and end["exit_code"] == 0
    assert end["run_id"] in run_ids
    (emf,) = emf_lines(done.stdout)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == metrics.NAMESPACE == "EtlPipeline"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"]]
    assert emf["Stage"] == "test"
    assert emf[metrics.SUCCESSFUL_RUN] == 1
    assert emf[metrics.ROWS_LOADED] == 250 and emf[metrics.ROWS_FAILED] == 0
    assert emf[metrics.DURATION_SECONDS] > 0


def test_rerun_adds_and_rewrites_nothing(job):
    job.seed(120)
    assert job.run().returncode == 0
    first = job.rows()

    again = job.run()

    assert again.returncode == 0, again.stderr
    assert job.rows() == first
    assert emf_lines(again.stdout)[0][metrics.ROWS_LOADED] == 0


def test_table_many_times_larger_than_the_batch_is_loaded_exactly_once(job):
    job.seed(3000)

    done = job.run(ETL_BATCH_SIZE="97", ETL_CONCURRENCY="8")

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(3000)
    loaded = [line for line in log_lines(done.stderr) if line["message"] == "batch done"]
    assert len(loaded) == 31  # ceil(3000 / 97)
    assert "rows_per_second" in loaded[-1]


def test_rows_failing_the_transform_go_to_the_errors_table_and_exit_3(job):
    job.seed(100)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:fail_on_multiples_of_7")

    assert done.returncode == 3, done.stderr
    assert_no_traceback(done)
    assert emf_lines(done.stdout) == []
    good = [r for r in expected_rows(100) if r["id"] % 7]
    assert business_columns(job.rows()) == good
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == list(range(7, 101, 7))
    assert all(e["error"] == f"ValueError: no service for id {e['id']}" for e in errors)
    assert {e["run_id"] for e in errors} == {job.rows()[0]["run_id"]}
    assert all(e["failed_at"] is not None for e in errors)

    # The next run retries only the failed rows; with the default transform they now load.
    fixed = job.run()
    assert fixed.returncode == 0, fixed.stderr
    assert business_columns(job.rows()) == expected_rows(100)


def test_a_transform_that_changes_the_key_is_a_row_error(job):
    job.seed(5)

    done = job.run(ETL_TRANSFORM=f"{TRANSFORMS}:change_key")

    assert done.returncode == 3
    assert [r["id"] for r in job.rows()] == [1, 3, 4, 5]
    assert "changed the key column" in job.rows(job.errors)[0]["error"]


def test_sigterm_stops_cleanly_and_the_next_run_completes_exactly(job):
    job.seed(600)
    process = job.start(ETL_TRANSFORM=SLOW, ETL_BATCH_SIZE="50", ETL_CONCURRENCY="4")
    stderr = sigterm_after_batches(process, 2)

    assert process.returncode == 143, stderr
    end = log_lines(stderr)[-1]
    assert "SIGTERM" in end["message"] and end["exit_code"] == 143
    partial = job.rows()
    assert 100 <= len(partial) < 600
    assert len({r["id"] for r in partial}) == len(partial)
    assert end["rows_loaded"] == len(partial)
    assert [t.table_id for t in job.client.list_tables(job.dataset) if "staging" in t.table_id] == []

    done = job.run()
    assert done.returncode == 0, done.stderr
    rows = job.rows()
    assert business_columns(rows) == expected_rows(600)
    assert len({r["run_id"] for r in rows}) == 2


def test_a_run_killed_at_any_point_is_completed_exactly_by_the_next(job):
    job.seed(400)
    kill_after_first_batch(job.start(ETL_TRANSFORM=SLOW, ETL_BATCH_SIZE="40", ETL_CONCURRENCY="4"))

    done = job.run()

    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(400)


def test_timeout_stops_cleanly_with_exit_4_and_the_next_run_completes(job):
    job.seed(1200)  # 6 s of transform work at 4 x 20 ms; the timeout is 3 s

    timed_out = job.run(ETL_TRANSFORM=SLOW, ETL_BATCH_SIZE="50", ETL_CONCURRENCY="4", ETL_TIMEOUT_MINUTES="0.05")

    assert timed_out.returncode == 4, timed_out.stderr
    assert "timed out" in log_lines(timed_out.stderr)[-1]["message"]
    assert 0 < job.count() < 1200
    done = job.run()
    assert done.returncode == 0
    assert business_columns(job.rows()) == expected_rows(1200)


def test_rows_with_a_null_key_are_counted_and_the_run_exits_3(job):
    job.create_source([source_row(i) for i in range(1, 21)] + [{**source_row(0), "id": None}] * 3)

    for _ in range(2):  # a rerun reports them again, and duplicates nothing
        done = job.run()

        assert done.returncode == 3, done.stderr
        logs = log_lines(done.stderr)
        (warning,) = [line for line in logs if "NULL key" in line["message"]]
        assert warning["rows_null_key"] == 3 and warning["key_column"] == "id"
        assert logs[-1]["rows_null_key"] == 3 and logs[-1]["exit_code"] == 3
        assert business_columns(job.rows()) == expected_rows(20)
        assert job.count(job.errors) == 0


@pytest.mark.parametrize(("key_mode", "counted"), [("REQUIRED", False), ("NULLABLE", True)])
def test_a_required_key_column_is_not_counted_for_null_keys(job, recording_proxy, key_mode, counted):
    job.create_source([source_row(i) for i in range(1, 11)], key_mode=key_mode)

    done = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url)

    assert done.returncode == 0, done.stderr
    assert any(b"IS NULL" in body and b"COUNT(*)" in body for body in recording_proxy.bodies) is counted


def test_rows_land_as_the_run_goes_once_they_have_waited_load_seconds(job):
    job.seed(100)

    done = job.run(ETL_BATCH_SIZE="20", settings={"etl_job.pipeline.LOAD_SECONDS": 0})

    assert done.returncode == 0, done.stderr
    progress = [(line["rows_loaded"], line["rows_waiting"]) for line in log_lines(done.stderr)
                if line["message"] == "batch done"]
    # Each batch starts a load of its 20 rows, which lands while the next batch is read and transformed.
    assert progress == [(0, 20), (20, 20), (40, 20), (60, 20), (80, 20)]
    assert log_lines(done.stderr)[-1]["rows_loaded"] == 100
    default = [line["rows_waiting"] for line in log_lines(job.run().stderr)
               if line["message"] == "batch done"]
    assert default == []  # nothing left to read: no batch


def test_a_duplicated_source_key_is_loaded_once_and_its_other_rows_are_errors(job):
    rows = [source_row(i) for i in range(1, 31)]
    rows += [{**source_row(5), "name": "Copy A"}, {**source_row(5), "name": "Copy B"}, source_row(17)]
    job.create_source(rows, key_mode="REQUIRED")

    done = job.run(ETL_BATCH_SIZE="7")

    assert done.returncode == 3, done.stderr
    loaded = job.rows()
    assert [r["id"] for r in loaded] == list(range(1, 31))
    assert next(r for r in loaded if r["id"] == 5)["name"] in ("Jane Roe 5", "Copy A", "Copy B")
    errors = job.rows(job.errors)
    assert sorted(e["id"] for e in errors) == [5, 5, 17]
    assert {e["error"] for e in errors} == {
        "duplicate key in source: 3 source rows have this key; one of them was processed",
        "duplicate key in source: 2 source rows have this key; one of them was processed",
    }
    end = log_lines(done.stderr)[-1]
    assert (end["rows_loaded"], end["rows_failed"], end["rows_duplicate_key"]) == (30, 3, 3)
    messages = log_messages(done)
    assert READ_AS_IT_IS not in messages and EXTRACTED in messages  # a first run, but keys repeat

    again = job.run()  # every key is loaded: nothing to read, no new error rows
    assert again.returncode == 0, again.stderr
    assert job.count() == 30 and job.count(job.errors) == 3


def test_a_first_run_reads_the_source_as_it_is_and_a_rerun_only_the_rows_still_to_process(job, recording_proxy):
    job.seed(30)

    first = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url)

    assert first.returncode == 0, first.stderr
    assert READ_AS_IT_IS in log_messages(first)
    assert not any(COPIES.encode() in body for body in recording_proxy.bodies)  # no extract table written
    rows = job.rows()
    assert business_columns(rows) == expected_rows(30)
    first_run_id = rows[0]["run_id"]

    # The destination's metadata says it is empty here: a local BigQuery's row count leaves out rows DML wrote.
    assert job.client.get_table(job.destination).num_rows == 0
    job.client.query(f"DELETE FROM `{job.destination}` WHERE id > 20").result()

    again = job.run()

    assert again.returncode == 0, again.stderr
    assert EXTRACTED in log_messages(again)
    assert log_lines(again.stderr)[-1]["rows_read"] == 10
    rows = job.rows()
    assert business_columns(rows) == expected_rows(30)
    assert {r["id"] for r in rows if r["run_id"] == first_run_id} == set(range(1, 21))


def test_a_view_as_the_source_is_read_through_the_extract_on_a_first_run_too(job):
    # The Storage Read API reads stored rows, not a view's query: the local BigQuery answers a session on a view
    # with no stream, which a first run read as it is took for an empty source (0 rows, exit 0). Local limit: a
    # view there has no columns unless given them when created, as BigQuery derives them from its query.
    job.seed(30)
    view = bigquery.Table(f"{job.source}_view")
    view.view_query = f"SELECT * FROM `{job.source}`"
    view.schema = job.client.get_table(job.source).schema
    job.client.create_table(view)

    done = job.run(ETL_SOURCE_TABLE=f"{job.source}_view")

    assert done.returncode == 0, done.stderr
    assert READ_AS_IT_IS not in log_messages(done)
    assert business_columns(job.rows()) == expected_rows(30)


def test_a_transform_can_add_columns_and_a_destination_without_them_is_a_clear_error(job):
    job.create_source([source_row(i) for i in range(1, 11)], key_mode="REQUIRED")
    assert job.run(ETL_TRANSFORM="tests.etl_job.sentiment:transform").returncode == 0
    schema = [f.name for f in job.client.get_table(job.destination).schema]
    assert schema == ["id", "name", "score", "created_at", "sentiment", "name_length", "run_id", "processed_at"]
    rows = job.rows()
    assert [(r["name"], r["sentiment"], r["name_length"]) for r in rows[2:4]] == [
        ("John Das 3", 0.5, 10), ("Jane Roe 4", -0.25, 10),
    ]

    # A destination created before the transform declared its columns: a clear error naming the fix, no change.
    job.client.delete_table(job.destination)
    assert job.run().returncode == 0

    done = job.run(ETL_TRANSFORM="tests.etl_job.sentiment:transform")

    assert done.returncode == 1
    assert_no_traceback(done)
    (error,) = [line for line in log_lines(done.stderr) if line["level"] == "ERROR"]
    assert error["message"].startswith(
        f"destination table {job.destination} (ETL_DESTINATION_TABLE) does not fit what the job writes: it lacks "
        f"columns ['sentiment', 'name_length']: add them (ALTER TABLE `{job.destination}` ADD COLUMN `sentiment` "
        "FLOAT64, ADD COLUMN `name_length` INT64;")


def test_a_broken_transform_module_is_a_clear_error_naming_the_file_and_line(job, tmp_path):
    job.seed(3)
    env = transform_module(tmp_path, "broken_transform", "import json\n\ndef transform(row)\n    return row\n")

    done = job.run(**env)

    assert done.returncode == 1
    assert_no_traceback(done)
    (error,) = [line for line in log_lines(done.stderr) if line["level"] == "ERROR"]
    assert error["message"].startswith(
        f"ETL_TRANSFORM='broken_transform:transform' cannot be imported: syntax error in "
        f"{tmp_path / 'broken_transform.py'}, line 3: "
    )
    assert error["message"].endswith("fix that line")


def test_sigterm_while_an_insert_hangs_gives_up_at_the_deadline_and_the_rerun_is_clean(job, holding_proxy):
    job.seed(300)
    proxy = holding_proxy(b"INSERT INTO ")
    deadline = 3.0
    process = job.start(deadline=deadline, BIGQUERY_EMULATOR_HOST=proxy.url, ETL_BATCH_SIZE="100")
    assert proxy.held.wait(60), "the job never sent its INSERT"

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    seconds = time.monotonic() - signalled

    assert process.returncode == 143, stderr
    assert deadline <= seconds < deadline + 5  # well inside ECS's 120 s before SIGKILL, at full scale
    logs = log_lines(stderr)
    assert any(line["message"].startswith("gave up on the batch in flight") for line in logs)
    end = logs[-1]
    assert "SIGTERM" in end["message"] and end["rows_loaded"] == 0 and end["rows_abandoned"] >= 100
    assert job.count() == 0  # the held INSERT never reached BigQuery

    proxy.release.set()
    done = job.run()
    assert done.returncode == 0, done.stderr
    assert business_columns(job.rows()) == expected_rows(300)


@pytest.mark.parametrize(("held", "overrides"), [
    (b"COUNT(DISTINCT", {}),  # a first run's check of the source's keys
    (COPIES.encode(), {"ETL_SOURCE_FILTER": "TRUE"}),  # the extract query: a filtered run is not read as it is
])
def test_sigterm_while_a_query_before_the_first_batch_hangs_stops_at_once(job, holding_proxy, held, overrides):
    job.seed(50)
    proxy = holding_proxy(held)
    process = job.start(BIGQUERY_EMULATOR_HOST=proxy.url, **overrides)  # the real 90 s deadline
    assert proxy.held.wait(60), f"the job never sent its query with {held!r}"

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stderr
    assert time.monotonic() - signalled < 5 < stopping.DEADLINE_SECONDS  # a read is given up on at once
    assert log_lines(stderr)[-1]["rows_read"] == 0
    proxy.release.set()
    assert job.run().returncode == 0
    assert business_columns(job.rows()) == expected_rows(50)


def test_missing_source_table_is_a_clear_error(job):
    done = job.run()

    assert done.returncode == 1
    assert_no_traceback(done)
    (error,) = [line for line in log_lines(done.stderr) if line["level"] == "ERROR"]
    assert f"source table {job.source} does not exist (ETL_SOURCE_TABLE)" in error["message"]
    assert [t.table_id for t in job.client.list_tables(job.dataset)] == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETL_DESTINATION_TABLE": "local-project.no_such_dataset.destination"},
         "dataset local-project.no_such_dataset of ETL_DESTINATION_TABLE does not exist: create it"),
        ({"ETL_KEY_COLUMN": "customer_id"}, "no scalar column 'customer_id' (ETL_KEY_COLUMN)"),
        ({"ETL_KEY_COLUMN": "customer_id", "ETL_TRANSFORM_SQL": DEMO_SQL}, "no scalar column 'customer_id' (ETL_KEY_COLUMN)"),
    ],
    ids=["missing-destination-dataset", "missing-key-column", "missing-key-column-sql-path"],
)
def test_missing_destination_dataset_or_key_column_is_a_clear_error(job, env, message):
    job.seed(3)

    done = job.run(**env)

    assert done.returncode == 1
    assert_no_traceback(done)
    assert message in done.stderr


@pytest.mark.parametrize("transform_sql", [None, DEMO_SQL], ids=["python-path", "sql-path"])
def test_a_repeated_key_column_is_refused_before_anything_is_written(job, transform_sql):
    job.create_source([{"id": [1, 2], "name": "Jane Doe"}], key_mode="REPEATED")

    done = job.run(ETL_TRANSFORM_SQL=transform_sql)

    assert done.returncode == 1
    assert_no_traceback(done)
    assert "no scalar column 'id' (ETL_KEY_COLUMN)" in done.stderr
    assert [t.table_id for t in job.client.list_tables(job.dataset)] == ["source"]


def test_bad_config_lists_every_problem_and_touches_nothing(job):
    done = job.run(ETL_SOURCE_TABLE=None, ETL_BATCH_SIZE="lots", ETL_TIMEOUT_MINUTES="-1")

    assert done.returncode == 1
    assert_no_traceback(done)
    (error,) = log_lines(done.stderr)
    assert "ETL_SOURCE_TABLE is not set" in error["message"]
    assert "ETL_BATCH_SIZE='lots' is invalid" in error["message"]
    assert "ETL_TIMEOUT_MINUTES='-1' is invalid" in error["message"]


def test_placeholder_credentials_say_how_to_put_the_real_key(job):
    done = job.run(BIGQUERY_EMULATOR_HOST=None, GOOGLE_CREDENTIALS_JSON='{"placeholder": "replace me"}')

    assert done.returncode == 1
    assert_no_traceback(done)
    assert "GOOGLE_CREDENTIALS_JSON still holds the stack's placeholder" in done.stderr
    assert "aws secretsmanager put-secret-value --secret-id" in done.stderr
    assert "replace me" not in done.stderr  # the secret's content is never logged


def test_unusable_credentials_and_endpoint_are_clear_errors(job):
    for overrides, message in [
        ({"BIGQUERY_EMULATOR_HOST": None, "GOOGLE_CREDENTIALS_JSON": "not json"}, "is not valid JSON"),
        ({"BIGQUERY_EMULATOR_HOST": "127.0.0.1:9050"}, "include the scheme"),
    ]:
        done = job.run(**overrides)
        assert done.returncode == 1, overrides
        assert_no_traceback(done)
        assert message in done.stderr
