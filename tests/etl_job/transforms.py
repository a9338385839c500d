"""Alternative transforms the tests point ``ETL_TRANSFORM`` at."""

import time

import pyarrow as pa
import pyarrow.compute as pc

# slow: the default transform, 20 ms slower per row (the bench's I/O-bound one): gives a test time to interrupt a run.
from dev.io_bound import transform as slow  # noqa: F401 - ETL_TRANSFORM points here (support.SLOW)
from etl_job import SKIP, SKIP_COLUMN, batch_transform
from etl_job.transform import transform, transform_batch


def fail_on_multiples_of_7(row: dict) -> dict:
    """The default transform, but raises for ids divisible by 7."""
    if row["id"] % 7 == 0:
        raise ValueError(f"no service for id {row['id']}")
    return transform(row)


def change_key(row: dict) -> dict:
    """A broken transform: changes the key of id 2."""
    return {**row, "id": row["id"] + 1000} if row["id"] == 2 else row


def unchanged(row: dict) -> dict:
    """Changes nothing: returns no column to change."""
    return {}


def only_changes(row: dict) -> dict:
    """Returns only the column it changes (the other columns keep their source values)."""
    return {"name": row["name"].replace("Doe", "Das")}


def changes_with_key(row: dict) -> dict:
    """Returns the key and the column it changes, the shape the issue reported losing every other column."""
    return {"id": row["id"], "name": row["name"].replace("Doe", "Das")}


def only_does(row: dict):
    """The tutorial's filter: keep only the rows with "Doe" in the name."""
    return transform(row) if "Doe" in row["name"] else SKIP


def returns_none(row: dict):
    """A transform that forgot its return statement."""
    transform(row)


def bad_score_for_multiples_of_97(row: dict) -> dict:
    """Puts words in the NUMERIC column ``score`` for ids divisible by 97."""
    return {"score": f"not a number {row['id']}"} if row["id"] % 97 == 0 else transform(row)


def sets_run_id(row: dict) -> dict:
    """A transform that tries to write a lineage column."""
    return {"run_id": "mine"}


def key_hunter(row: dict) -> dict:
    """The default transform, but raises if the Google key can still be read from the environment: its own,
    a child process's, or /proc (the copy Linux keeps of the environment the process started with)."""
    import os
    import subprocess

    marker = os.environ.get("ETL_TEST_KEY_MARKER", "PRIVATE KEY")
    child = subprocess.run(["sh", "-c", "env; cat /proc/$PPID/environ"], capture_output=True, text=True).stdout
    found = {
        "os.environ": any(marker in value for value in os.environ.values() if value != marker),
        "a child process": marker in child.replace(f"ETL_TEST_KEY_MARKER={marker}", ""),
        "/proc/self/environ": marker.encode() in open("/proc/self/environ", "rb").read().replace(
            f"ETL_TEST_KEY_MARKER={marker}".encode(), b""),
    }
    if any(found.values()):
        raise RuntimeError(f"the key is readable through {[where for where, yes in found.items() if yes]}")
    return transform(row)


# The batch form (etl_job.arrow_transform): one pyarrow Table per batch.

@batch_transform
def unchanged_batch(rows: pa.Table) -> pa.Table:
    """Changes nothing: returns no column."""
    return rows.select([])


@batch_transform
def slow_batch(rows: pa.Table) -> pa.Table:
    """The default batch transform, 50 ms slower per batch: gives a test time to interrupt a run."""
    time.sleep(0.05)
    return transform_batch(rows)


@batch_transform
def fail_on_multiples_of_7_batch(rows: pa.Table) -> pa.Table:
    """The default batch transform, but raises for a batch holding an id divisible by 7."""
    bad = [i for i in rows["id"].to_pylist() if i % 7 == 0]
    if bad:
        raise ValueError(f"no service for id {bad[0]}")
    return transform_batch(rows)


@batch_transform
def huge_score_for_multiples_of_97_batch(rows: pa.Table) -> pa.Table:
    """The default batch transform, and a score (NUMERIC) beyond NUMERIC's range for ids divisible by 97."""
    scores = [1e30 if i % 97 == 0 else i + 0.25 for i in rows["id"].to_pylist()]
    return transform_batch(rows).append_column("score", pa.array(scores, pa.float64()))


@batch_transform
def change_key_batch(rows: pa.Table) -> pa.Table:
    """A broken batch transform: changes the key of id 2."""
    return pa.table({"id": pc.if_else(pc.equal(rows["id"], 2), 1002, rows["id"])})


@batch_transform
def only_does_batch(rows: pa.Table) -> pa.Table:
    """The tutorial's filter in the batch form: rows without "Doe" in the name are skipped."""
    keep = pc.match_substring(rows["name"], "Doe")
    return transform_batch(rows).append_column(SKIP_COLUMN, pc.invert(keep))


@batch_transform
def returns_none_batch(rows: pa.Table):
    """A batch transform that forgot its return statement."""
    transform_batch(rows)


@batch_transform
def every_column_batch(rows: pa.Table) -> pa.Table:
    """Returns every column as it came: each is then checked by column as a changed one."""
    return rows


@batch_transform
def precise_score_batch(rows: pa.Table) -> pa.Table:
    """The default batch transform, and a float score (NUMERIC) for every row, with 10 decimal places for ids
    divisible by 97."""
    scores = [i + 0.1234567891 if i % 97 == 0 else i + 0.25 for i in rows["id"].to_pylist()]
    return transform_batch(rows).append_column("score", pa.array(scores, pa.float64()))


@batch_transform
def nanosecond_times_batch(rows: pa.Table) -> pa.Table:
    """created_at in nanoseconds (as pandas gives them), with a nanosecond digit for ids divisible by 97."""
    nanos = pc.cast(rows["created_at"], pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    extra = pa.array([1 if i % 97 == 0 else 0 for i in rows["id"].to_pylist()], pa.int64())
    return pa.table({"created_at": pc.add(nanos, extra).cast(pa.timestamp("ns", tz="UTC"))})
