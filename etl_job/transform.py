"""The transform: the one function to replace with your own."""


def transform(row: dict) -> dict:
    """Return the row to load for one source row (the tutorial's rule: "Doe" in ``name`` becomes "Das").

    Called from worker threads (``ETL_CONCURRENCY`` at a time), so a slow, I/O-bound call here
    (one API request per row) runs concurrently. Keep the key column unchanged and return only
    columns the destination table has. Raise to reject the row: it goes to the errors table and
    the run exits 3; the next run tries it again.
    """
    name = row.get("name")
    if isinstance(name, str) and "Doe" in name:
        return {**row, "name": name.replace("Doe", "Das")}
    return row
