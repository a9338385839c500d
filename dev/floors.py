"""``make bench``'s reference processes, each run alone as ``python -m dev.floors <name>``, importing only what it
needs (the bench's own modules would slow a floor down, and flatter the job against it).

* ``floor``: the least this backend needs for the Python path: a Storage Read of the source (Arrow, the job's
  READ_STREAMS streams), then one Parquet load of the same rows.
* ``bare_merge``: the SQL path's floor: create the destination, then one bare MERGE of the transformed rows
  (ETL_TRANSFORM_SQL), with none of the job's checks.
* ``rest``: the real job with today's algorithm before the Storage APIs (REST query pages, JSON loads).

Each reads the tables the job reads (ETL_SOURCE_TABLE, ETL_DESTINATION_TABLE) on the local BigQuery
(BIGQUERY_EMULATOR_HOST).
"""

from __future__ import annotations

import os
import sys


def schema() -> list:
    """The bench's source table."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("email", "STRING"),
        bigquery.SchemaField("amount", "FLOAT64"),
        bigquery.SchemaField("created_at", "TIMESTAMP"),
    ]


def rest() -> None:
    """The real job with today's algorithm before the Storage APIs: REST query pages, JSON loads."""
    import runpy

    from etl_job import pipeline

    pipeline.STORAGE_API = False
    sys.argv = ["etl_job"]
    runpy.run_module("etl_job", run_name="__main__", alter_sys=True)


def floor() -> None:
    """A Storage Read of the source with the job's reader, then one Parquet load of the same rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    from etl_job import arrow_io, bigquery_io
    from etl_job.contract import TableId

    fields = schema()
    read_client = arrow_io.client(None, bigquery_io.storage_endpoint(os.environ))
    session = arrow_io.open_session(read_client, TableId.parse(os.environ["ETL_SOURCE_TABLE"]),
                                    [f.name for f in fields], bigquery_io.READ_STREAMS, timeout=60)
    reader = arrow_io.Reader(read_client, session, bigquery_io.READ_BUFFER)
    batches = []
    while (batch := reader.next_rows(1_000_000)) is not None:
        batches.append(batch)
    body = io.BytesIO()
    pq.write_table(pa.concat_tables(batches), body)
    config = bigquery.LoadJobConfig(schema=fields, write_disposition="WRITE_TRUNCATE", source_format="PARQUET")
    body.seek(0)
    _client().load_table_from_file(body, os.environ["ETL_DESTINATION_TABLE"], job_config=config).result()


def bare_merge() -> None:
    """Create the destination, then one MERGE of the transformed rows, nothing else."""
    from google.cloud import bigquery

    source, destination = os.environ["ETL_SOURCE_TABLE"], os.environ["ETL_DESTINATION_TABLE"]
    client = _client()
    # The job's lineage columns (etl_job.runs.LINEAGE), written out: importing the job would slow this floor down.
    fields = [*schema(), bigquery.SchemaField("run_id", "STRING"), bigquery.SchemaField("processed_at", "TIMESTAMP")]
    client.create_table(bigquery.Table(destination, schema=fields))
    columns = [f.name for f in fields]
    client.query(
        f"MERGE `{destination}` AS T USING (SELECT\n{os.environ['ETL_TRANSFORM_SQL']}\n, 'bench' AS run_id, "
        f"CURRENT_TIMESTAMP() AS processed_at FROM `{source}` AS s) AS S ON T.id = S.id "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) VALUES ({', '.join('S.' + c for c in columns)})"
    ).result()


def _client():
    # Not dev.local_bigquery's client: importing that module loads the job's configuration model (pydantic),
    # which would slow the bare MERGE down.
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=os.environ["ETL_DESTINATION_TABLE"].split(".")[0],
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=os.environ["BIGQUERY_EMULATOR_HOST"]),
    )


PROCESSES = {"floor": floor, "bare_merge": bare_merge, "rest": rest}

if __name__ == "__main__":
    PROCESSES[sys.argv[1]]()
