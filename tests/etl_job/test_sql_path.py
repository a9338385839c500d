"""The source filter (both paths) and the SQL path (ETL_TRANSFORM_SQL), run as the real job on a local BigQuery.

Local BigQuery limit (bqemulator 1.4.0): it answers a dry run by running the query on DuckDB
without returning rows, so its error texts are DuckDB's ("Binder Error: Referenced column ...")
where BigQuery says "Unrecognized name: ...", and it accepts some predicates BigQuery refuses
(DuckDB casts an INT64 WHERE to BOOL; BigQuery wants BOOL). These tests therefore check that the
job sends a dry run (``dryRun`` in the request) before anything is written and reports the
backend's first message line in one line, not the exact wording.
"""

from __future__ import annotations

import signal
import time

import pytest

from etl_job.config import load_config
from etl_job.runs import LINEAGE, Shard
from etl_job.sql_transform import counts_sql
from tests.support import DEMO_SQL, log_lines

DOE = "name LIKE '%Doe%'"
LINEAGE_COLUMNS = {f.name for f in LINEAGE}


def last_line(process) -> dict:
    return log_lines(process.stderr)[-1]


def without_lineage(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in LINEAGE_COLUMNS} for row in rows]


def pending_counts(job, run_id: str) -> list[int]:
    """What the SQL path's count reads now: [rows with a key, rows with a NULL key] still to process for ``run_id``."""
    config = load_config(job.env(ETL_TRANSFORM_SQL=DEMO_SQL), is_tty=False)
    (counted,) = job.client.query(counts_sql(config, Shard(), None, run_id)).result()
    return list(counted[0])


def metadata_reads(proxy) -> list[str]:
    """The paths of the table metadata the job asked for (GET .../tables/<name>), without the query string."""
    return [path.split("?")[0] for method, path in proxy.requests if method == "GET" and "/tables/" in path]


def tables_read(proxy) -> set[str]:
    """The tables whose metadata the job asked for."""
    return {path.rsplit("/tables/", 1)[1] for path in metadata_reads(proxy)}


@pytest.mark.parametrize(("path", "variable", "value", "says"), [
    ("python", "ETL_SOURCE_FILTER", "nme LIKE '%Doe%'", "nme"),
    ("python", "ETL_SOURCE_FILTER", "name LIKE", "Syntax error"),
    ("sql", "ETL_SOURCE_FILTER", "nme LIKE '%Doe%'", "nme"),
    ("sql", "ETL_SOURCE_FILTER", "name LIKE", "Syntax error"),
    ("sql", "ETL_TRANSFORM_SQL", "* REPLACE (REPLACE(nme, 'Doe', 'Das') AS name)", "nme"),
])
def test_bad_sql_stops_before_anything_is_written_with_bigquerys_message_in_one_line(job, path, variable, value,
                                                                                      says):
    job.seed(5)
    env = {variable: value}
    if path == "sql":
        env.setdefault("ETL_TRANSFORM_SQL", DEMO_SQL)

    done = job.run(**env)

    assert done.returncode == 1, done.stderr
    line = last_line(done)
    config_key = "source_filter" if variable == "ETL_SOURCE_FILTER" else "transform_sql"
    assert line["message"].startswith(f"{variable} (config key {config_key}) is not valid for source table")
    assert "BigQuery says:" in line["message"] and says in line["message"] and "\n" not in line["message"]
    assert "Traceback" not in done.stderr
    tables = {t.table_id for t in job.client.list_tables(job.dataset)}
    assert tables == {"source"}  # no destination, errors or staging table: nothing was written


@pytest.mark.parametrize("transform_sql", [None, DEMO_SQL])
def test_the_check_is_a_dry_run_sent_before_anything_is_written(job, holding_proxy, transform_sql):
    """On the SQL path, the destination and skipped-keys tables are read while the dry run is still out, not after
    it: each is a round trip (a tenth of a second or more on BigQuery)."""
    job.seed(5)
    proxy = holding_proxy(b'"dryRun": true')

    process = job.start(BIGQUERY_EMULATOR_HOST=proxy.url, ETL_SOURCE_FILTER=DOE, ETL_TRANSFORM_SQL=transform_sql)
    try:
        assert proxy.held.wait(30), "the job sent no dry run"
        assert {t.table_id for t in job.client.list_tables(job.dataset)} == {"source"}
        if transform_sql:
            deadline = time.monotonic() + 30
            while not {"destination", "destination_skipped"} <= tables_read(proxy) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert {"destination", "destination_skipped"} <= tables_read(proxy)
    finally:
        process.kill()
        process.communicate(timeout=30)


@pytest.mark.parametrize("transform_sql", [None, DEMO_SQL])
def test_the_check_is_one_dry_run_ending_in_limit_0(job, recording_proxy, transform_sql):
    job.seed(5)

    done = job.run(BIGQUERY_EMULATOR_HOST=recording_proxy.url, ETL_SOURCE_FILTER=DOE, ETL_TRANSFORM_SQL=transform_sql)

    assert done.returncode == 0, done.stderr
    dry_runs = [body for body in recording_proxy.bodies if b'"dryRun": true' in body]
    assert len(dry_runs) == 1  # on the SQL path, the SELECT list's dry run checks the filter too
    # Local BigQuery limit: it answers a dry run by running the query (0.4 s at 1,000,000 rows). BigQuery reads
    # nothing for one; LIMIT 0 makes the local one read nothing either.
    assert b"LIMIT 0" in dry_runs[0]
    # and the source's metadata is read once on either path: the filter's check needs no read of its own
    assert [path for path in metadata_reads(recording_proxy) if "/tables/source" in path] == [
        f"/bigquery/v2/projects/{job.client.project}/datasets/{job.dataset}/tables/source"]


def test_sql_path_gives_the_same_destination_rows_as_the_python_path(job):
    job.seed(50)
    python_destination, sql_destination = f"{job.destination}_py", f"{job.destination}_sql"

    python = job.run(ETL_DESTINATION_TABLE=python_destination)
    sql = job.run(ETL_DESTINATION_TABLE=sql_destination, ETL_TRANSFORM_SQL=DEMO_SQL)

    assert (python.returncode, sql.returncode) == (0, 0), (python.stderr, sql.stderr)
    expected = without_lineage(job.rows(python_destination))
    assert len(expected) == 50 and sum("Das" in r["name"] for r in expected) == 16
    assert without_lineage(job.rows(sql_destination)) == expected
    python_schema = job.client.get_table(python_destination).schema
    sql_schema = job.client.get_table(sql_destination).schema
    assert [(f.name, f.field_type, f.mode) for f in sql_schema] == [(f.name, f.field_type, f.mode)
                                                                    for f in python_schema]
    assert {r["run_id"] for r in job.rows(sql_destination)} == {last_line(sql)["run_id"]}


def test_source_filter_reads_only_matching_rows_and_the_sql_path_with_it_equals_the_python_path(job):
    job.seed(30)
    python_destination, sql_destination = f"{job.destination}_py", f"{job.destination}_sql"

    python = job.run(ETL_DESTINATION_TABLE=python_destination, ETL_SOURCE_FILTER=DOE)
    assert python.returncode == 0, python.stderr
    rows = job.rows(python_destination)
    assert [r["id"] for r in rows] == list(range(3, 31, 3))  # every third name has "Doe"
    assert all(r["name"].startswith("John Das") for r in rows)
    assert last_line(python)["rows_read"] == 10
    assert job.run(ETL_DESTINATION_TABLE=sql_destination, ETL_SOURCE_FILTER=DOE,
                   ETL_TRANSFORM_SQL=DEMO_SQL).returncode == 0

    assert without_lineage(job.rows(sql_destination)) == without_lineage(job.rows(python_destination))
    assert job.count(sql_destination) == 10


def test_sql_path_reruns_converge_and_take_over_from_an_interrupted_python_run(job):
    job.seed(40)
    # An interrupted Python run: some keys are in the destination already, the rest are not.
    assert job.run(ETL_SOURCE_FILTER="id <= 15").returncode == 0
    before = {r["id"]: r for r in job.rows()}

    first = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)
    again = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)

    assert (first.returncode, again.returncode) == (0, 0), first.stderr
    assert (last_line(first)["rows_loaded"], last_line(again)["rows_loaded"]) == (25, 0)
    rows = job.rows()
    assert [r["id"] for r in rows] == list(range(1, 41))
    assert all(r == before[r["id"]] for r in rows if r["id"] <= 15)  # loaded rows are never touched again
    # New source rows: only they are inserted by the next run.
    job.client.query(f"INSERT INTO `{job.source}` (id, name) VALUES (41, 'Ann Doe'), (42, NULL)").result()
    more = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)
    assert last_line(more)["rows_loaded"] == 2
    assert [r["name"] for r in job.rows()[-2:]] == ["Ann Das", None]
    # The count takes rows without a run_id for rows already loaded (a destination made by hand, or given run_id
    # by the ALTER TABLE the job suggests, has rows with a NULL run_id).
    job.client.query(f"UPDATE `{job.destination}` SET run_id = NULL WHERE id = 1").result()
    assert pending_counts(job, "a-later-run") == [0, 0]  # nothing is left to process


def test_a_select_list_that_changes_the_key_still_inserts_each_row_once(job):
    # Not refused (nothing short of running it shows that the list changes the key's values): the anti-join on the
    # source's key then never matches, and only the INSERT's own check on the key it writes keeps a rerun out.
    job.seed(10)
    changed = "* REPLACE (s.id + 1000 AS id)"

    first = job.run(ETL_TRANSFORM_SQL=changed)
    again = job.run(ETL_TRANSFORM_SQL=changed)

    assert first.returncode == 0, first.stderr
    assert (last_line(first)["rows_loaded"], last_line(again)["rows_loaded"]) == (10, 0)
    assert [r["id"] for r in job.rows()] == list(range(1001, 1011))


def test_sql_path_stopped_during_its_insert_exits_143_and_the_rerun_completes(job, holding_proxy):
    job.seed(20)
    proxy = holding_proxy(b"INSERT INTO ")  # the INSERT never gets an answer
    process = job.start(deadline=2, BIGQUERY_EMULATOR_HOST=proxy.url, ETL_TRANSFORM_SQL=DEMO_SQL)
    assert proxy.held.wait(60), "the INSERT was never sent"

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr
    assert "gave up on the INSERT" in stderr
    rerun = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)
    assert rerun.returncode == 0 and [r["id"] for r in job.rows()] == list(range(1, 21))


def test_sql_path_leaves_out_the_keys_the_python_transform_skipped(job):
    job.seed(6)
    # What the Python path records for a row its transform returned etl_job.SKIP: it is not read again.
    job.client.query(f"CREATE TABLE `{job.destination}_skipped` (id INT64, run_id STRING, skipped_at TIMESTAMP)"
                     ).result()
    job.client.query(f"INSERT INTO `{job.destination}_skipped` (id, run_id) VALUES (2, 'earlier'), (5, 'earlier')"
                     ).result()

    done = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)

    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in job.rows()] == [1, 3, 4, 6]


def test_sql_path_counts_duplicate_and_null_keys_like_the_python_path(job):
    rows = [{"id": 1, "name": "A Doe"}, {"id": 2, "name": "B"}, {"id": 2, "name": "B again"},
            {"id": None, "name": "no key"}]
    job.create_source(rows)

    first = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)
    line = last_line(first)
    # The count beside the INSERT reads the same once the INSERT has committed (it counts the run's own rows).
    counted = pending_counts(job, line["run_id"])
    again = job.run(ETL_TRANSFORM_SQL=DEMO_SQL)

    assert first.returncode == 3, first.stderr
    assert (line["rows_loaded"], line["rows_duplicate_key"], line["rows_null_key"]) == (2, 1, 1)
    assert counted == [line["rows_loaded"] + line["rows_duplicate_key"], line["rows_null_key"]] == [3, 1]
    assert sorted(r["id"] for r in job.rows()) == [1, 2]
    assert again.returncode == 3 and last_line(again)["rows_duplicate_key"] == 0  # NULL keys stay: exit 3 again


def test_an_insert_that_commits_is_reported_when_its_count_is_given_up_at_a_stop(job, holding_proxy):
    job.seed(5)
    proxy = holding_proxy(b"COUNTIF")  # the count never gets an answer; the INSERT does
    process = job.start(deadline=2, BIGQUERY_EMULATOR_HOST=proxy.url, ETL_TRANSFORM_SQL=DEMO_SQL)
    assert proxy.held.wait(60), "the job sent no count"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.count() < 5:  # the destination exists before the count is sent
        time.sleep(0.2)
    assert any(b"INSERT INTO " in body for body in proxy.bodies), "the INSERT waited for the count"

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert log_lines(stderr)[-1]["rows_loaded"] == 5
    assert "gave up on the INSERT" not in stderr
    assert "the INSERT committed, but counting the source rows it had to process failed" in stderr


def test_sql_path_over_shards_equals_one_run(job):
    job.seed(60)
    for index in range(3):
        done = job.run(ETL_TRANSFORM_SQL=DEMO_SQL, ETL_SHARD_INDEX=str(index), ETL_SHARD_COUNT="3")
        assert done.returncode == 0, done.stderr
        assert 0 < last_line(done)["rows_loaded"] < 60

    assert [r["id"] for r in job.rows()] == list(range(1, 61))


@pytest.mark.parametrize(("select_list", "says"), [
    ("name", "does not return the key column 'id'"),
    ("*, 'x' AS run_id", "returns run_id or processed_at"),
])
def test_sql_path_refuses_an_unusable_select_list(job, select_list, says):
    job.seed(3)

    done = job.run(ETL_TRANSFORM_SQL=select_list)

    assert done.returncode == 1 and says in last_line(done)["message"]
    assert {t.table_id for t in job.client.list_tables(job.dataset)} == {"source"}


def test_sql_path_checks_an_existing_destination_and_names_the_alter_table(job):
    job.seed(3)
    assert job.run().returncode == 0  # the destination, as the Python path creates it

    done = job.run(ETL_TRANSFORM_SQL="*, LENGTH(name) AS name_length")

    assert done.returncode == 1
    assert "ALTER TABLE" in last_line(done)["message"] and "ADD COLUMN `name_length` INT64" in last_line(done)["message"]


def test_python_and_sql_transforms_both_set_is_a_config_error(job):
    done = job.run(ETL_TRANSFORM="etl_job.transform:transform", ETL_TRANSFORM_SQL=DEMO_SQL)

    assert done.returncode == 1 and "are both set" in done.stderr


def test_a_sql_path_run_imports_neither_the_python_path_nor_the_storage_read_client(job):
    """Each costs the SQL job time at every start: Arrow's compute and Parquet modules and the pipeline (0.05 s),
    and the Storage Read client and pyarrow, which google-cloud-bigquery imports whenever they are installed (0.04 s)."""
    job.seed(5)
    watched = ("etl_job.pipeline", "pyarrow", "pyarrow.parquet", "pyarrow.compute", "google.cloud.bigquery_storage_v1")

    done = job.run(watch=watched, ETL_TRANSFORM_SQL=DEMO_SQL)

    assert done.returncode == 0, done.stderr
    assert last_line(done)["rows_loaded"] == 5
    assert done.stdout.splitlines()[-1] == "loaded: "
