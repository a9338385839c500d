"""``make run`` works: the demo starts a local BigQuery, runs the real job on it and leaves nothing running."""

import subprocess
import sys

from tests.support import ROOT


def test_demo_runs_the_job_and_exits_with_its_code():
    done = subprocess.run([sys.executable, "-m", "dev.demo"], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "customers has 1,000 rows, 333 of them with 'Doe'" in done.stdout
    assert "customers_clean: 1,000 rows, 0 with 'Doe', 333 with 'Das'" in done.stdout
    assert ("customers_clean_batch: 1,000 rows; the same rows as local-project.demo.customers_clean apart from "
            "run_id and processed_at: yes") in done.stdout
    assert ("customers_clean_sql: 1,000 rows; the same rows as local-project.demo.customers_clean apart from run_id "
            "and processed_at: yes") in done.stdout
    assert "local BigQuery stopped" in done.stdout
    assert "Traceback" not in done.stderr
