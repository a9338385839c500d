"""A fanned-out run: N real job processes, one per shard, started together against one local BigQuery."""

from __future__ import annotations

from etl_job import contract
from tests.support import SLOW, business_columns, expected_rows, kill_after_first_batch, log_lines, source_row

SHARDS = 4
ROWS = 2000


def shard_env(index: int, count: int = SHARDS) -> dict:
    """What the state machine's container overrides set for one shard."""
    return {contract.SHARD_INDEX: str(index), contract.SHARD_COUNT: str(count)}


def run_shards(job, count: int = SHARDS, **overrides: str) -> list:
    """Start one job process per shard at once, wait for all; return (returncode, stderr) per shard."""
    processes = [job.start(**shard_env(index, count), **overrides) for index in range(count)]
    outputs = [process.communicate(timeout=180) for process in processes]
    return [(process.returncode, stderr) for process, (_, stderr) in zip(processes, outputs)]


def test_shards_together_write_exactly_what_one_unsharded_run_writes(job):
    job.seed(ROWS)

    ends = [log_lines(stderr)[-1] for code, stderr in run_shards(job) if code == 0]

    assert len(ends) == SHARDS, "every shard exits 0"
    rows = job.rows()
    assert business_columns(rows) == expected_rows(ROWS)  # no key missing, none twice
    assert sorted(end["shard_index"] for end in ends) == list(range(SHARDS))
    assert {end["shard_count"] for end in ends} == {SHARDS}
    loaded = [end["rows_loaded"] for end in ends]
    assert sum(loaded) == ROWS
    assert all(abs(n - ROWS / SHARDS) <= 0.1 * ROWS / SHARDS for n in loaded), loaded
    # Each shard's rows carry its own run id: the slices are disjoint.
    by_run = {end["run_id"]: end["rows_loaded"] for end in ends}
    assert {run: sum(r["run_id"] == run for r in rows) for run in by_run} == by_run

    unsharded = job.run()  # one unsharded run on top finds nothing left: the same key space
    assert unsharded.returncode == 0 and log_lines(unsharded.stderr)[-1]["rows_read"] == 0


def test_the_start_line_names_the_shard(job):
    job.seed(10)

    done = job.run(**shard_env(2, 3))

    assert done.returncode == 0, done.stderr
    start = log_lines(done.stderr)[0]
    assert start["message"] == "job starting" and (start["shard_index"], start["shard_count"]) == (2, 3)


def test_a_shard_killed_mid_run_is_completed_exactly_by_rerunning_only_it(job):
    job.seed(ROWS)
    killed = 1
    others = [job.start(**shard_env(i)) for i in range(SHARDS) if i != killed]
    kill_after_first_batch(job.start(**shard_env(killed), ETL_TRANSFORM=SLOW, ETL_BATCH_SIZE="40", ETL_CONCURRENCY="4"))
    for process in others:
        process.communicate(timeout=180)
    assert [process.returncode for process in others] == [0] * (SHARDS - 1)
    assert 0 < ROWS - job.count() < ROWS / SHARDS, "only part of the killed shard's slice is loaded"

    rerun = job.run(**shard_env(killed))

    assert rerun.returncode == 0, rerun.stderr
    assert 0 < log_lines(rerun.stderr)[-1]["rows_loaded"] < ROWS / SHARDS
    assert business_columns(job.rows()) == expected_rows(ROWS)


def test_rows_with_a_null_key_are_counted_once_across_shards_by_shard_0(job):
    job.create_source([source_row(i) for i in range(1, 41)] + [{**source_row(0), "id": None}] * 3)

    results = run_shards(job)

    ends = [log_lines(stderr)[-1] for _, stderr in results]
    assert sum(end["rows_null_key"] for end in ends) == 3
    assert [code for code, _ in results] == [3, 0, 0, 0]  # one shard reports them (exit 3), not four
    assert business_columns(job.rows()) == expected_rows(40)
