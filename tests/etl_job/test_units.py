"""Unit tests for the small pieces: the metric line, log formats, SQL, JSON conversion, dependency-free modules."""

import datetime
import decimal
import json
import logging
import subprocess
import sys

from etl_job import bigquery_io, logs, metrics, pipeline
from etl_job.config import TableId
from etl_job.errors import ExitCode


def test_success_metric_line_is_embedded_metric_format():
    line = metrics.success_emf_line(stage="prod", rows_loaded=10, rows_failed=0, duration_seconds=1.23456)
    emf = json.loads(line)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "EtlPipeline"
    assert directive["Dimensions"] == [["Stage"]]
    # SuccessfulRun is published by the stack's metric filter on this field, not declared here twice.
    assert {m["Name"] for m in directive["Metrics"]} == {"RowsLoaded", "RowsFailed", "DurationSeconds"}
    assert emf["Stage"] == "prod" and emf["SuccessfulRun"] == 1 and emf["DurationSeconds"] == 1.235
    assert isinstance(emf["_aws"]["Timestamp"], int)


def test_modules_the_stack_imports_pull_in_no_google_or_aws_libraries():
    code = (
        "import sys, etl_job.metrics, etl_job.contract, etl_job.errors; "
        "print([m for m in sys.modules if m.split('.')[0] in ('google', 'boto3', 'botocore')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_exit_codes():
    assert [int(c) for c in ExitCode] == [0, 1, 3, 4, 5, 130, 143]


def test_log_formats():
    record = logging.LogRecord("etl_job", logging.INFO, __file__, 1, "batch loaded", None, None)
    record.fields = {"rows": 5}
    assert json.loads(logs.JsonFormatter().format(record))["rows"] == 5
    assert json.loads(logs.JsonFormatter().format(record))["message"] == "batch loaded"
    assert logs.TextFormatter().format(record).endswith("INFO    batch loaded  rows=5")


def test_extract_is_an_anti_join_with_a_shard_predicate():
    sql = pipeline.extract_sql(TableId("p", "d", "src"), TableId("p", "d", "dst"), "id")
    assert "FROM `p.d.src` AS s" in sql
    assert "NOT EXISTS (SELECT 1 FROM `p.d.dst` AS d WHERE d.`id` = s.`id`)" in sql
    assert "@shard_count" in sql and "@shard_index" in sql


def test_merge_inserts_only_new_keys():
    sql = pipeline.merge_sql(TableId("p", "d", "dst"), TableId("p", "d", "stg"), "id", ["id", "name"])
    assert "ON T.`id` = S.`id`" in sql
    assert "WHEN NOT MATCHED THEN INSERT (`id`, `name`) VALUES (S.`id`, S.`name`)" in sql
    assert "WHEN MATCHED" not in sql


def test_values_are_converted_back_to_json():
    when = datetime.datetime(2024, 1, 31, 5, 0, tzinfo=datetime.timezone.utc)
    row = {"t": when, "d": when.date(), "n": decimal.Decimal("1.50"), "b": b"\x00\x01", "r": {"x": [when.time()]}}
    assert {k: bigquery_io.to_json(v) for k, v in row.items()} == {
        "t": "2024-01-31T05:00:00+00:00",
        "d": "2024-01-31",
        "n": "1.50",
        "b": "AAE=",
        "r": {"x": ["05:00:00"]},
    }
