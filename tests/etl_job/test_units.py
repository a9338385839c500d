"""Unit tests for the small pieces: the metric line, log formats, exit codes, stop timings, JSON conversion."""

import datetime
import decimal
import json
import logging
import re
import subprocess
import sys

import etl_job.__main__ as job_main
from etl_job import bigquery_io, logs, metrics, stopping
from etl_job.errors import ExitCode
from stacks import limits


def test_success_metric_line_is_embedded_metric_format():
    line = metrics.success_emf_line(stage="prod", rows_loaded=10, rows_failed=0, duration_seconds=1.23456,
                                    bytes_billed=20971520, bytes_processed=1000)
    emf = json.loads(line)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "EtlPipeline"
    assert directive["Dimensions"] == [["Stage"]]
    # SuccessfulRun is published by the stack's metric filter on this field, not declared here twice.
    assert {m["Name"] for m in directive["Metrics"]} == {"RowsLoaded", "RowsFailed", "DurationSeconds", "BytesBilled",
                                                         "BytesProcessed"}
    assert (emf["BytesBilled"], emf["BytesProcessed"]) == (20971520, 1000)
    assert emf["Stage"] == "prod" and emf["SuccessfulRun"] == 1 and emf["DurationSeconds"] == 1.235
    assert isinstance(emf["_aws"]["Timestamp"], int)


def test_modules_the_stack_imports_pull_in_no_google_or_aws_libraries():
    code = (
        "import sys, etl_job.metrics, etl_job.contract, etl_job.errors; "
        "print([m for m in sys.modules if m.split('.')[0] in ('google', 'boto3', 'botocore')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_exit_code_is_documented_and_every_documented_code_exists():
    documented = {int(code) for code in re.findall(r"^    (\d+) ", job_main.__doc__, re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_a_stop_settles_in_order_and_well_before_ecs_sigkills_the_task():
    assert stopping.POLL_SECONDS < stopping.SETTLE_SECONDS < stopping.DEADLINE_SECONDS
    # Margin for the staging-table drop, a job cancel (5 s) and the last log lines.
    assert stopping.DEADLINE_SECONDS + 20 <= limits.STOP_TIMEOUT_SECONDS


def test_log_formats():
    record = logging.LogRecord("etl_job", logging.INFO, __file__, 1, "batch done", None, None)
    record.fields = {"rows": 5}
    assert json.loads(logs.JsonFormatter().format(record))["rows"] == 5
    assert json.loads(logs.JsonFormatter().format(record))["message"] == "batch done"
    assert logs.TextFormatter().format(record).endswith("INFO    batch done  rows=5")


def test_values_are_converted_back_to_json():
    when = datetime.datetime(2024, 1, 31, 5, 0, tzinfo=datetime.UTC)
    row = {"t": when, "d": when.date(), "n": decimal.Decimal("1.50"), "b": b"\x00\x01", "r": {"x": [when.time()]}}
    assert {k: bigquery_io.to_json(v) for k, v in row.items()} == {
        "t": "2024-01-31T05:00:00+00:00",
        "d": "2024-01-31",
        "n": "1.50",
        "b": "AAE=",
        "r": {"x": ["05:00:00"]},
    }
