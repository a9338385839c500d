"""``make bench``'s I/O-bound transform, in a module of its own so that the job processes importing it
(ETL_TRANSFORM=dev.io_bound:transform) load nothing else of the bench."""

from __future__ import annotations

import time

from etl_job.transform import transform as tutorial_rule

SLEEP_SECONDS = 0.020


def transform(row: dict) -> dict:
    """The tutorial's rule after a 20 ms sleep: a stand-in for one API call per row."""
    time.sleep(SLEEP_SECONDS)
    return tutorial_rule(row)
