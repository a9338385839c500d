"""A transform that writes scratch files, as many real ones do (tempfile, a cache under HOME).

Mounted read-only into the job's container by tests/integration/test_image.py; not part of the image.
"""

import json
import tempfile
from pathlib import Path

from etl_job.transform import transform as default_transform


def transform(row: dict) -> dict:
    """The default transform, after a round trip of the row through a temporary file and a cache directory."""
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as scratch:
        json.dump(row, scratch, default=str)
        scratch.flush()
        scratch.seek(0)
        assert json.load(scratch)["id"] == row["id"]
    (Path.home() / ".cache" / "scratch_transform").mkdir(parents=True, exist_ok=True)
    return default_transform(row)
