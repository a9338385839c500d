"""Alternative transforms the tests point ``ETL_TRANSFORM`` at."""

import time

from etl_job import SKIP
from etl_job.transform import transform


def slow(row: dict) -> dict:
    """The default transform, 20 ms slower per row: gives a test time to interrupt a run."""
    time.sleep(0.02)
    return transform(row)


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
