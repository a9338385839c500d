"""The transform: the one function to replace with your own."""

# Columns the transform adds to each row, name -> BigQuery type, e.g. {"sentiment": "FLOAT64"}:
# the job creates the destination with them (an existing destination lacking them is an error naming the fix).
OUTPUT_COLUMNS: dict[str, str] = {}


def transform(row: dict) -> dict:
    """Return the row to load for one source row (the tutorial's rule: "Doe" in ``name`` becomes "Das").

    Called from worker threads (``ETL_CONCURRENCY`` at a time), so a slow, I/O-bound call here
    (one API request per row) runs concurrently. Keep the key column unchanged; return the
    source's columns and those declared in ``OUTPUT_COLUMNS``. Raise to reject the row: it goes
    to the errors table and the run exits 3; the next run tries it again.
    """
    name = row.get("name")
    if isinstance(name, str) and "Doe" in name:
        return {**row, "name": name.replace("Doe", "Das")}
    return row
