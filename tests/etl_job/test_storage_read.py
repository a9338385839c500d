"""The Storage Read API reader (``arrow_io.Reader``) against the local BigQuery's gRPC port: memory stays bounded."""

from __future__ import annotations

import io
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from etl_job import arrow_io
from etl_job.config import TableId

ROWS = 300_000  # the local BigQuery sends 65,536 rows a message: several messages per stream


class _Counting:
    """A Storage Read client that counts the messages received from BigQuery and not yet decoded by the reader."""

    def __init__(self, read_client, decoded: list[int]) -> None:
        self._client, self._decoded = read_client, decoded
        self._lock = threading.Lock()
        self.received = 0
        self.most_waiting = 0

    def read_rows(self, stream: str):
        responses = self._client.read_rows(stream)  # receives the first message at once (google.api_core)
        self._count()
        return self._rest(iter(responses))

    def _rest(self, responses):
        yield next(responses)
        for response in responses:
            self._count()
            yield response

    def _count(self) -> None:
        with self._lock:
            self.received += 1
            self.most_waiting = max(self.most_waiting, self.received - self._decoded[0])


def _source(job) -> TableId:
    table = pa.table({"id": pa.array(range(ROWS), pa.int64())})
    body = io.BytesIO()
    pq.write_table(table, body)
    body.seek(0)
    config = bigquery.LoadJobConfig(schema=[bigquery.SchemaField("id", "INT64")], source_format="PARQUET")
    job.client.load_table_from_file(body, job.source, job_config=config).result()
    return TableId.parse(job.source)


def test_streams_take_turns_so_at_most_buffer_messages_wait_however_many_streams(job, monkeypatch):
    decoded = [0]
    decode = pa.ipc.read_record_batch

    def counted(*args, **kwargs):
        decoded[0] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(pa.ipc, "read_record_batch", counted)
    read_client = arrow_io.client(None, job.grpc)
    session = arrow_io.open_session(read_client, _source(job), ["id"], 4, timeout=60)
    assert len(session.streams) == 4  # else this would not test several streams (the local BigQuery gives 4)
    counting = _Counting(read_client, decoded)
    reader = arrow_io.Reader(counting, session, buffer=1)

    ids = []
    while (table := reader.next_rows(20_000)) is not None:
        ids += table["id"].to_pylist()
        time.sleep(0.02)  # a consumer slower than the streams: they would run ahead
    reader.close()

    assert sorted(ids) == list(range(ROWS))
    assert counting.received == decoded[0] > 4
    # One message received ahead of the reader, not one per stream (each read_rows call receives one at once).
    assert counting.most_waiting == 1
