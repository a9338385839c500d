"""The Storage Read API reader (``arrow_io.Reader``) against the local BigQuery's gRPC port: memory stays bounded."""

from __future__ import annotations

import gc
import io
import threading
import time
import weakref

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types

from etl_job import arrow_io
from etl_job.config import TableId

ROWS = 300_000  # the local BigQuery sends 65,536 rows a message: several messages per stream


class _Watching:
    """A Storage Read client that counts the messages received and not yet decoded by the reader, and keeps a weak
    reference to each, to see which stay alive."""

    def __init__(self, read_client, decoded: list[int]) -> None:
        self._client, self._decoded = read_client, decoded
        self._lock = threading.Lock()
        self.received = 0
        self.most_waiting = 0
        self.handed_out: list[weakref.ref] = []

    def read_rows(self, stream: str):
        return _Watched(iter(self._client.read_rows(stream)), self)

    def alive(self) -> int:
        return sum(1 for message in self.handed_out if message() is not None)

    def received_one(self, response) -> None:
        with self._lock:
            self.received += 1
            self.most_waiting = max(self.most_waiting, self.received - self._decoded[0])
            self.handed_out.append(weakref.ref(response))


class _Watched:
    """Not a generator: a generator's frame would itself hold the message it last handed out."""

    def __init__(self, responses, watching: _Watching) -> None:
        self._responses, self._watching = responses, watching

    def __iter__(self):
        return self

    def __next__(self):
        response = next(self._responses)
        self._watching.received_one(response)
        return response


def _source(job) -> TableId:
    table = pa.table({"id": pa.array(range(ROWS), pa.int64())})
    body = io.BytesIO()
    pq.write_table(table, body)
    body.seek(0)
    config = bigquery.LoadJobConfig(schema=[bigquery.SchemaField("id", "INT64")], source_format="PARQUET")
    job.client.load_table_from_file(body, job.source, job_config=config).result()
    return TableId.parse(job.source)


def test_streams_take_turns_and_a_message_is_let_go_once_its_rows_are_taken(job, monkeypatch):
    decoded = [0]
    decode = pa.ipc.read_record_batch

    def counted(*args, **kwargs):
        decoded[0] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(pa.ipc, "read_record_batch", counted)
    read_client = arrow_io.client(None, job.grpc)
    session = arrow_io.open_session(read_client, _source(job), ["id"], 4, timeout=60)
    assert len(session.streams) == 4  # else this would not test several streams (the local BigQuery gives 4)
    watching = _Watching(read_client, decoded)
    reader = arrow_io.Reader(watching, session, buffer=1)

    ids, most_alive = [], 0
    while (table := reader.next_rows(20_000)) is not None:
        ids += table["id"].to_pylist()
        time.sleep(0.02)  # a consumer slower than the streams: they would run ahead, and wait for their turn
        gc.collect()
        most_alive = max(most_alive, watching.alive())
    reader.close()

    assert sorted(ids) == list(range(ROWS))
    assert watching.received == decoded[0] > 4
    # One message received ahead of the reader, not one per stream (each stream's call receives one at once).
    assert watching.most_waiting == 1
    # The client library's ReadRowsStream held each stream's last message until the next arrived: with
    # 65,536 rows a message, 4.4 MB a stream more than the rows waiting (make bench: 4-6 MiB at the peak).
    assert len(watching.handed_out) > 4
    assert most_alive <= 1  # at most the one a stream thread is handing over right now


def _message(rows: int):
    return types.ReadRowsResponse(row_count=rows)


def _failing_call(rows_before: list[int]):
    """The stream's own call: these messages, then a transient error (while opening it, if there are none)."""

    def rest():
        yield from (_message(rows) for rows in rows_before)
        raise api_exceptions.ServiceUnavailable("the connection dropped")

    def one_call(client, *, read_stream, offset):
        if not rows_before:  # google.api_core receives the first message within the call
            raise api_exceptions.ResourceExhausted("slow down")
        return rest()

    return one_call


@pytest.mark.parametrize("rows_before", [[3, 4], []], ids=["while reading", "while opening"])
def test_a_stream_that_fails_is_read_on_from_where_it_stopped_through_the_library(monkeypatch, rows_before):
    resumed = []

    def reconnecting(client, name, offset=0):
        resumed.append((name, offset))
        return iter([_message(5)])

    monkeypatch.setattr(arrow_io, "_one_call", _failing_call(rows_before))
    monkeypatch.setattr(arrow_io, "_reconnecting", reconnecting)
    read_client = arrow_io.client(None, "localhost:1")

    counts = [response.row_count for response in read_client.read_rows("projects/p/streams/s0", offset=2)]

    assert counts == [*rows_before, 5]
    # The library's stream goes on after the errors it deems transient, from the rows read so far.
    assert resumed == [("projects/p/streams/s0", 2 + sum(rows_before))]


def test_an_error_the_library_does_not_go_on_after_is_raised(monkeypatch):
    def one_call(client, *, read_stream, offset):
        yield _message(3)
        raise api_exceptions.NotFound("session expired")

    def reconnecting(client, name, offset=0):
        resumed.append(offset)
        yield _message(1)
        raise api_exceptions.NotFound("session expired")

    resumed = []
    monkeypatch.setattr(arrow_io, "_one_call", one_call)
    monkeypatch.setattr(arrow_io, "_reconnecting", reconnecting)
    counts = []

    with pytest.raises(api_exceptions.NotFound):
        counts.extend(response.row_count for response in arrow_io.client(None, "localhost:1").read_rows("s0"))

    assert counts == [3, 1] and resumed == [3]  # handed over once; the library's error is the last word
