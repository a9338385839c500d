"""`make cost` takes the stage's CDK_ARGS like every other target, and shows BigQuery's scan cost per run."""

from __future__ import annotations

import os
import subprocess

from ops import prices
from ops.cost import report
from tests.support import ROOT, build_config


def test_make_cost_applies_cdk_args() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        ["make", "--no-print-directory", "cost", "STAGE=dev", "CDK_ARGS=-c cpu=512 -c memory_mib=1024 -c source_table_gib=512"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "task: 0.5 vCPU, 1024 MiB" in done.stdout
    assert "BigQuery scans: about 512 GiB a run" in done.stdout


def test_bigquery_scan_cost_per_run_and_month_from_the_table_size() -> None:
    text = report(build_config(source_table_gib="512", schedule="rate(1 day)"))
    per_run = 0.5 * prices.BIGQUERY_ON_DEMAND_TIB
    assert f"${per_run:.4f} a run, ${per_run * 365 / 12:.2f} a month" in text
    assert "WARNING" not in text


def test_a_table_above_the_cap_is_a_warning_and_no_size_says_how_to_give_one() -> None:
    assert "every run would fail" in report(build_config(source_table_gib="2048"))
    assert 'make cost CDK_ARGS="-c source_table_gib=500"' in report(build_config())
