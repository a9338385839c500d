"""The transform: the one function to replace with your own, in either of two forms.

``transform`` is the row form (the default, ETL_TRANSFORM=etl_job.transform:transform): plain Python on
one row at a time, on up to ETL_CONCURRENCY threads, made for a rule that calls an API per row.
``transform_batch`` is the same rule in the batch form (ETL_TRANSFORM=etl_job.transform:transform_batch):
one call per batch on a pyarrow Table, with Arrow compute functions and no Python object per value,
for a rule that Arrow can express (its contract: ``etl_job.arrow_transform``). And ``transform.sql``
is the same rule for the SQL path (ETL_TRANSFORM_SQL), where no row leaves BigQuery. All three give
the same destination rows.

The row form's contract (also in the README):

* It is called once per source row with the row as a dict (column → value as the BigQuery client
  returns it: int, float, Decimal, str, bytes, date/datetime/time, dict for a STRUCT, list for an
  ARRAY, the parsed value for a JSON column, ``etl_job.JSON_NULL`` for a JSON null, None for NULL).
* It returns **only what changes**: a dict of the columns to set, merged over the source row. A
  column it leaves out keeps its source value; to clear one, return it as None. Returning the
  whole row (changed or not) is the same thing, so both styles are right and neither can silently
  NULL a column. ``{}`` means "load the row unchanged".
* It returns ``etl_job.SKIP`` to leave the row out: its key is recorded in ``<destination>_skipped``
  and not read again (delete it there to have the row processed again). ``None`` is an error (a
  missing ``return`` must not drop every row silently).
* It raises to reject the row: the row goes to ``<destination>_errors`` with the exception and the
  run exits 3; the next run tries it again. So does a value that would not fit its column.
* It keeps the key column unchanged and does not set ``run_id`` / ``processed_at`` (the job does).
"""

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl_job import batch_transform

# Columns the transform adds to each row (or source columns it gives a new type), name -> BigQuery type
# in DDL syntax, e.g. {"sentiment": "FLOAT64", "tags": "ARRAY<STRING>", "address": "STRUCT<city STRING, zip STRING>"}
# (a google.cloud.bigquery.SchemaField works too): the job creates the destination with them, and an
# existing destination lacking them is an error naming the ALTER TABLE to run.
OUTPUT_COLUMNS: dict[str, str] = {}


def transform(row: dict[str, Any]) -> dict[str, Any]:
    """Return the columns to change in one source row (the tutorial's rule: "Doe" in ``name`` becomes "Das").

    Called from worker threads (``ETL_CONCURRENCY`` at a time), so a slow, I/O-bound call here
    (one API request per row) runs concurrently. See the module docstring for what to return.
    """
    name = row.get("name")
    if isinstance(name, str) and "Doe" in name:
        return {**row, "name": name.replace("Doe", "Das")}
    return row


@batch_transform
def transform_batch(rows: pa.Table) -> pa.Table:
    """The same rule over a whole batch: return only the column that changes (see ``etl_job.arrow_transform``)."""
    return pa.table({"name": pc.replace_substring(rows["name"], "Doe", "Das")})
