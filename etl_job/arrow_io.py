"""Arrow on the wire: reading tables with the BigQuery Storage Read API, and rows into Arrow for Parquet loads."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types
from google.cloud.bigquery_storage_v1.services import big_query_read
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

from etl_job import JSON_NULL, schema
from etl_job.config import TableId

# What pyarrow raises for a value that does not fit its column.
CONVERSION_ERRORS = (pa.ArrowException, ArithmeticError, TypeError, ValueError)
_DONE = object()  # a stream's end, in the reader's queue
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SCALARS: dict[str, pa.DataType] = {
    "INT64": pa.int64(), "FLOAT64": pa.float64(), "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38), "BOOL": pa.bool_(), "STRING": pa.string(), "BYTES": pa.binary(),
    "DATE": pa.date32(), "DATETIME": pa.timestamp("us"), "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"), "JSON": pa.string(), "GEOGRAPHY": pa.string(),
}


def use_system_allocator() -> None:
    """Arrow's buffers from malloc, which returns freed memory, not from mimalloc's per-thread pools,
    which kept it: the job's peak memory grew with the table (make bench)."""
    pa.set_memory_pool(pa.system_memory_pool())


# The Storage Read client's two read_rows: the generated one (one call; google.api_core receives the first message
# before it returns), and the library's, which wraps it in a ReadRowsStream that reconnects after transient errors.
_one_call = big_query_read.BigQueryReadClient.read_rows
_reconnecting = BigQueryReadClient.read_rows


class ReadClient(BigQueryReadClient):
    """Google's Storage Read API client, whose ``read_rows`` lets go of each message as soon as the caller does."""

    def read_rows(self, name: str, offset: int = 0) -> Iterator[Any]:  # type: ignore[override]  # only what the job passes
        return _Messages(self, name, offset)


class _Messages:
    """A read stream's messages (``ReadRowsResponse``), none kept once handed out.

    The library's ``ReadRowsStream`` holds each message until the next arrives (a generator's local): on
    the local BigQuery 4.4 MB a stream, which took a 1,000,000-row run's peak memory 4-6 MiB higher
    (make bench). This makes the stream's call itself. Should opening or reading it fail, the stream is
    read on from the rows read so far through the library's ``ReadRowsStream``, which goes on after the
    errors it deems transient and raises the others (so an error that is not transient costs one more
    call). Not a generator: a generator would hold the message too.
    """

    def __init__(self, read_client: ReadClient, stream: str, offset: int) -> None:
        self._client, self._stream, self._offset = read_client, stream, offset
        self._responses: Iterator[Any] | None = None
        self._resumed = False

    def __iter__(self) -> _Messages:
        return self

    def __next__(self) -> Any:
        try:
            if self._responses is None:
                self._responses = iter(_one_call(self._client, read_stream=self._stream, offset=self._offset))
            response = next(self._responses)
        except api_exceptions.GoogleAPICallError:
            if self._resumed:
                raise  # the library's stream gave up
            self._resumed = True
            self._responses = iter(_reconnecting(  # type: ignore[no-untyped-call]  # Google's, untyped
                self._client, self._stream, offset=self._offset))
            response = next(self._responses)
        self._offset += response.row_count
        return response


def client(credentials: Any, endpoint: str | None) -> Any:
    """A Storage Read API client: Google's with the run's credentials, or a local one over plain gRPC."""
    if endpoint is None:
        return ReadClient(credentials=credentials)  # type: ignore[no-untyped-call]  # Google's constructor, untyped
    # No cap on a message's size, as the client's own channel: a local BigQuery sends 65,536 rows a message.
    # No bandwidth-delay probing: on a local connection it only grows each stream's flow-control window, and
    # what the window lets in waits in memory (make bench: 10 MiB more at 1,000,000 rows). Google's channel
    # keeps it: across clouds the window must cover the round trip to keep a stream fast.
    options = [("grpc.max_receive_message_length", -1), ("grpc.http2.bdp_probe", 0)]
    channel = grpc.insecure_channel(endpoint, options=options)
    return ReadClient(transport=BigQueryReadGrpcTransport(channel=channel))  # type: ignore[no-untyped-call]  # Google's constructor, untyped


def open_session(read_client: Any, table: TableId, columns: list[str], streams: int, *, timeout: float) -> Any:
    """A read session on the table in Arrow, only ``columns`` (projection), split into up to ``streams`` streams."""
    session = types.ReadSession(
        table=f"projects/{table.project}/datasets/{table.dataset}/tables/{table.table}",
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(selected_fields=columns),
    )
    return read_client.create_read_session(parent=f"projects/{table.project}", read_session=session,
                                           max_stream_count=streams, timeout=timeout)


class Reader:
    """Reads every stream of a session on its own thread into one bounded queue; hands out tables of n rows.

    The streams take turns: a stream thread asks for its next message only with one of ``buffer``
    tokens, given back when the message is decoded, so at most ``buffer`` messages are received
    and not yet decoded, however many streams there are (a local BigQuery sends 65,536 rows a
    message; four streams each holding one took the job's memory up by a third).
    """

    def __init__(self, read_client: Any, session: Any, buffer: int) -> None:
        self._schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        self._queue: queue.Queue[object] = queue.Queue()
        self._tokens = threading.Semaphore(max(1, buffer))
        self._closed = threading.Event()
        self._pending: list[pa.RecordBatch] = []
        self._running = len(session.streams)
        for stream in session.streams:
            threading.Thread(target=self._read, args=(read_client, stream.name), name="storage-read",
                             daemon=True).start()

    def holds(self, rows: int) -> bool:
        """Whether the next ``rows`` rows are already decoded (``next_rows`` will not wait)."""
        return self._held() >= rows

    def next_rows(self, rows: int) -> pa.Table | None:
        """The next table of at most ``rows`` rows; None when every stream has ended."""
        held = self._held()
        while held < rows and self._running:
            item = self._queue.get()
            if item is _DONE:
                self._running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                batch = pa.ipc.read_record_batch(pa.py_buffer(item), self._schema)
                self._tokens.release()
                self._pending.append(batch)
                held += batch.num_rows
        if not held:
            return None
        table = pa.Table.from_batches(self._pending, self._schema)
        self._pending = table.slice(rows).to_batches() if held > rows else []
        return table.slice(0, rows)

    def _held(self) -> int:
        held: int = sum(batch.num_rows for batch in self._pending)
        return held

    def close(self) -> None:
        """Let the stream threads end (they stop at their next record batch)."""
        self._closed.set()
        while not self._queue.empty():
            self._queue.get_nowait()

    def _read(self, read_client: Any, stream: str) -> None:
        try:
            if not self._take_token():
                return
            # The token first: the stream's call receives its first message at once (google.api_core prefetches
            # it to raise errors early), and every stream doing so together took the job's memory up by a fifth.
            responses = iter(read_client.read_rows(stream))
            while (response := next(responses, None)) is not None:
                self._queue.put(response.arrow_record_batch.serialized_record_batch)
                del response  # the message object: only its bytes wait
                if not self._take_token():
                    return
            self._tokens.release()
            self._queue.put(_DONE)
        except Exception as exc:  # noqa: BLE001 - handed to the reading thread
            self._queue.put(exc)

    def _take_token(self) -> bool:
        while not self._closed.is_set():
            if self._tokens.acquire(timeout=0.2):
                return True
        return False


class Parquet:
    """Rows as one Parquet file in memory, written a row group at a time as Arrow tables are added.

    Held compressed: a fifth of the same rows' Arrow size on the bench's table, so one load job can
    carry many batches (BigQuery, local or not, takes a while per load job whatever its size).
    """

    ROW_GROUP_BYTES = 4 * 1024 * 1024  # of Arrow gathered before it is written as one row group

    def __init__(self, schema: pa.Schema) -> None:
        self.schema, self.rows = schema, 0
        self._file = io.BytesIO()
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd", use_dictionary=False)
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0  # their Arrow size, kept as they are added (a table's nbytes walks its buffers)
        self._first_added: float | None = None

    @classmethod
    def of(cls, table: pa.Table) -> Parquet:
        """The table as a finished Parquet file."""
        parquet = cls(table.schema)
        parquet.add(table)
        parquet.finish()
        return parquet

    def __len__(self) -> int:
        return self.rows

    @property
    def age(self) -> float:
        """Seconds since the first rows were added (0 while empty)."""
        return 0.0 if self._first_added is None else time.monotonic() - self._first_added

    @property
    def size(self) -> int:
        """Bytes held: the Parquet written so far and the Arrow waiting to be written."""
        return self._file.tell() + self._pending_bytes

    def add(self, table: pa.Table) -> None:
        self._first_added = self._first_added or time.monotonic()
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_bytes >= self.ROW_GROUP_BYTES:
            self._write()

    def finish(self) -> None:
        """Write what waits and the file's footer; ``data`` is then the whole file."""
        self._write()
        self._writer.close()

    @property
    def data(self) -> io.BytesIO:
        self._file.seek(0)
        return self._file

    def read(self) -> pa.Table:
        """The rows back as Arrow (to find the one a load job refuses)."""
        return pq.read_table(self.data)

    def _write(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=1 << 30)
            self._pending, self._pending_bytes = [], 0


def to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as dicts of Python values, as the REST API's rows hold them (TIMESTAMP in UTC)."""
    names = table.column_names
    columns = [_timestamps(column) if pa.types.is_timestamp(column.type) and column.type.tz else column.to_pylist()
               for column in table.columns]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _timestamps(column: pa.ChunkedArray) -> list[datetime.datetime | None]:
    # Five times faster than to_pylist, which builds a time zone object for every value.
    micros = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64()).to_pylist()
    return [None if value is None else _EPOCH + datetime.timedelta(microseconds=value) for value in micros]


def arrow_schema(fields: Iterable[bigquery.SchemaField]) -> pa.Schema:
    """The Arrow schema a Parquet load of these BigQuery columns needs (JSON travels as its text)."""
    return pa.schema([_arrow_field(f) for f in fields])


def _arrow_field(field: bigquery.SchemaField) -> pa.Field:
    kind = schema.standard(field.field_type)
    inner = pa.struct([_arrow_field(f) for f in field.fields]) if kind == "STRUCT" else _SCALARS[kind]
    return pa.field(field.name, pa.list_(inner) if field.mode == "REPEATED" else inner)


def to_arrow(rows: list[dict[str, Any]], target: pa.Schema, fields: list[bigquery.SchemaField]) -> pa.Table:
    """The rows as an Arrow table of the target schema.

    Values the row checks accept but Arrow does not take as they are (a timestamp or a number as
    text, a float for a NUMERIC, a dict in a JSON column inside a STRUCT) are converted first; rows of
    plain values take the fast path. Raises pyarrow's error, or ValueError, for a value that still does not fit.
    """
    try:
        return pa.Table.from_pylist(rows, schema=target)
    except CONVERSION_ERRORS:
        converters = {f.name: _converter(f) for f in fields}
        converted = [{name: convert(row.get(name)) for name, convert in converters.items()} for row in rows]
        return pa.Table.from_pylist(converted, schema=target)


def _converter(field: bigquery.SchemaField) -> Callable[[Any], Any]:
    kind = schema.standard(field.field_type)
    scalar = _struct(field) if kind == "STRUCT" else _SCALAR_CONVERTERS.get(kind, _unchanged)

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if field.mode == "REPEATED":
            return [scalar(item) for item in value]
        return scalar(value)

    return convert


def _struct(field: bigquery.SchemaField) -> Callable[[Any], Any]:
    members = {f.name: _converter(f) for f in field.fields}
    return lambda value: {name: convert(value.get(name)) for name, convert in members.items()}


def _unchanged(value: Any) -> Any:
    return value


def _when_text(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda value: parse(value.strip()) if isinstance(value, str) else value


def _moment(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace(" ", "T", 1))


def _decimal(value: Any) -> Any:
    return decimal.Decimal(repr(value) if isinstance(value, float) else str(value).strip())


def json_text(value: Any) -> str:
    """A JSON column's value as its JSON text (``JSON_NULL`` as ``null``), as the staging table holds it."""
    return "null" if value is JSON_NULL else json.dumps(value, allow_nan=False)


_SCALAR_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "INT64": _when_text(int), "FLOAT64": _when_text(float), "NUMERIC": _decimal, "BIGNUMERIC": _decimal,
    "DATE": _when_text(datetime.date.fromisoformat), "DATETIME": _when_text(_moment),
    "TIME": _when_text(datetime.time.fromisoformat), "TIMESTAMP": _when_text(_moment),
    "JSON": json_text,
}
