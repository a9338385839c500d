"""Alternative transforms the tests point ``ETL_TRANSFORM`` at."""

import time

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
