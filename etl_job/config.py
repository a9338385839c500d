"""The job's configuration: environment variables validated once at start-up into a frozen dataclass."""

from __future__ import annotations

import importlib
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etl_job import contract
from etl_job.errors import JobError

# Not set by the stack: a test and benchmark hook (and a way to try a transform without editing code).
TRANSFORM = contract.TRANSFORM  # module:function, default etl_job.transform:transform

DEFAULT_KEY_COLUMN = "id"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_CONCURRENCY = 64
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_STAGE = "local"
DEFAULT_TRANSFORM = "etl_job.transform:transform"
MAX_BATCH_SIZE = contract.MAX_BATCH_SIZE
MAX_CONCURRENCY = contract.MAX_CONCURRENCY
MAX_TIMEOUT_MINUTES = contract.MAX_TIMEOUT_MINUTES
MAX_SHARDS = contract.MAX_SHARDS
LOG_LEVELS = contract.LOG_LEVELS
LOG_FORMATS = ("json", "text")

_TABLE_ID = re.compile(contract.TABLE_ID_PATTERN)
_COLUMN = re.compile(contract.COLUMN_PATTERN)
_STAGE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # every pattern here is applied with fullmatch
_TRANSFORM_SPEC = re.compile(r"[\w.]+:\w+")
_WHOLE = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class TableId:
    """A BigQuery table as ``project.dataset.table``."""

    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        """The name quoted for use in SQL."""
        return f"`{self}`"

    def sibling(self, table: str) -> TableId:
        """Another table in the same dataset."""
        return TableId(self.project, self.dataset, table)


@dataclass(frozen=True)
class Config:
    """Validated settings for one run; holds no secrets, so it is safe to log."""

    source_table: TableId
    destination_table: TableId
    key_column: str = DEFAULT_KEY_COLUMN
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = "json"
    stage: str = DEFAULT_STAGE
    timeout_minutes: float | None = None
    transform: str = DEFAULT_TRANSFORM
    shard_index: int = 0
    shard_count: int = 1
    source_filter: str | None = None  # a SQL predicate: only matching source rows are read
    transform_sql: str | None = None  # a SELECT list: set, the transform runs inside BigQuery (sql_transform)
    max_bytes_billed: int | None = None  # every query's cap; None: no cap

    @property
    def errors_table(self) -> TableId:
        """Where rows the transform rejected are recorded."""
        return self.destination_table.sibling(f"{self.destination_table.table}_errors")

    def summary(self) -> dict:
        """The settings as plain values, for the start-up log line."""
        return {
            "source_table": str(self.source_table),
            "destination_table": str(self.destination_table),
            "errors_table": str(self.errors_table),
            "key_column": self.key_column,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "stage": self.stage,
            "timeout_minutes": self.timeout_minutes,
            "transform": self.transform,
            "shard_index": self.shard_index,
            "shard_count": self.shard_count,
            "source_filter": self.source_filter,
            "path": "sql" if self.transform_sql else "python",
            "transform_sql": self.transform_sql,
            "max_bytes_billed": self.max_bytes_billed,
        }


def load_config(env: Mapping[str, str], *, is_tty: bool = False) -> Config:
    """Validate the environment into a Config; raise JobError listing every problem and its fix."""
    problems: list[str] = []

    def table(name: str) -> TableId | None:
        value = env.get(name, "").strip()
        if not value:
            problems.append(f"{name} is not set: set it to a table as project.dataset.table")
            return None
        match = _TABLE_ID.fullmatch(value)
        if not match:
            problems.append(
                f"{name}={value!r} is not a table id: use project.dataset.table "
                "(letters, digits, underscores; no backticks or spaces)"
            )
            return None
        return TableId(**match.groupdict())

    def number(name: str, default: float, cast: type, low: float, high: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            value = None
        # Whole numbers may equal ``low``; other numbers (minutes) must be above it.
        if value is None or not low <= value <= high or (cast is float and value == low):
            rule = (f"a whole number from {low} to {high}" if cast is int
                    else f"a number above {low:g} and at most {high:g}")
            problems.append(f"{name}={raw!r} is invalid: use {rule}, or unset it")
            return default
        return value

    def choice(name: str, default: str, allowed: tuple[str, ...], normalise: Callable[[str], str]) -> str:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if normalise(raw) not in allowed:
            problems.append(f"{name}={raw!r} is invalid: use one of {', '.join(allowed)}")
            return default
        return normalise(raw)

    source = table(contract.SOURCE_TABLE)
    destination = table(contract.DESTINATION_TABLE)
    if source and destination and source == destination:
        problems.append(
            f"{contract.SOURCE_TABLE} and {contract.DESTINATION_TABLE} are the same table: "
            "the job writes to a separate destination"
        )

    key_column = env.get(contract.KEY_COLUMN, "").strip() or DEFAULT_KEY_COLUMN
    if not _COLUMN.fullmatch(key_column):
        problems.append(f"{contract.KEY_COLUMN}={key_column!r} is not a column name: use letters, digits and _")

    batch_size = number(contract.BATCH_SIZE, DEFAULT_BATCH_SIZE, int, 1, MAX_BATCH_SIZE)
    concurrency = number(contract.CONCURRENCY, DEFAULT_CONCURRENCY, int, 1, MAX_CONCURRENCY)
    timeout = number(contract.TIMEOUT_MINUTES, 0.0, float, 0.0, MAX_TIMEOUT_MINUTES)
    max_bytes_billed = number(contract.MAX_BYTES_BILLED, 0, int, contract.MIN_BYTES_BILLED,
                              contract.MAX_BYTES_BILLED_VALUE)

    shard_index, shard_count = _shard(env, problems)

    log_level = choice(contract.LOG_LEVEL, DEFAULT_LOG_LEVEL, LOG_LEVELS, str.upper)
    log_format = choice(contract.LOG_FORMAT, "text" if is_tty else "json", LOG_FORMATS, str.lower)

    stage = env.get(contract.STAGE, "").strip() or DEFAULT_STAGE
    if not _STAGE.fullmatch(stage):
        problems.append(f"{contract.STAGE}={stage!r} is invalid: use letters, digits, - and _ (e.g. dev, prod)")

    transform = env.get(TRANSFORM, "").strip() or DEFAULT_TRANSFORM
    if not _TRANSFORM_SPEC.fullmatch(transform):
        problems.append(f"{TRANSFORM}={transform!r} is invalid: use module:function, e.g. {DEFAULT_TRANSFORM}")
    source_filter, transform_sql = (_sql_text(env, name, problems) for name in (contract.SOURCE_FILTER,
                                                                                contract.TRANSFORM_SQL))
    if transform_sql and env.get(TRANSFORM, "").strip():
        problems.append(f"{TRANSFORM} and {contract.TRANSFORM_SQL} are both set: a run takes one path, "
                        "Python or SQL; unset one of them")

    if problems:
        raise JobError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return Config(
        source_table=source,
        destination_table=destination,
        key_column=key_column,
        batch_size=int(batch_size),
        concurrency=int(concurrency),
        log_level=log_level,
        log_format=log_format,
        stage=stage,
        timeout_minutes=timeout or None,
        transform=transform,
        shard_index=shard_index,
        shard_count=shard_count,
        source_filter=source_filter,
        transform_sql=transform_sql,
        max_bytes_billed=int(max_bytes_billed) or None,
    )


def _sql_text(env: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """An optional piece of SQL (ETL_SOURCE_FILTER, ETL_TRANSFORM_SQL): unset or checked by the contract's rule."""
    value = env.get(name)
    if value is None or value == "":
        return None
    problem = contract.sql_text_problem(value)
    if problem:
        problems.append(f"{name} is invalid: {problem}")
        return None
    return value.strip()


def _shard(env: Mapping[str, str], problems: list[str]) -> tuple[int, int]:
    """ETL_SHARD_INDEX and ETL_SHARD_COUNT: both unset (0 of 1) or both set, index below count."""
    raw_index, raw_count = (env.get(name, "").strip() for name in contract.SHARD_SET)
    if not raw_index and not raw_count:
        return 0, 1
    if not raw_index or not raw_count:
        problems.append(f"{contract.SHARD_INDEX} and {contract.SHARD_COUNT} go together: set both or neither")
        return 0, 1
    count = int(raw_count) if _WHOLE.fullmatch(raw_count) else 0
    if not 1 <= count <= MAX_SHARDS:
        problems.append(f"{contract.SHARD_COUNT}={raw_count!r} is invalid: use a whole number from 1 to {MAX_SHARDS}")
        return 0, 1
    if not _WHOLE.fullmatch(raw_index) or int(raw_index) >= count:
        problems.append(f"{contract.SHARD_INDEX}={raw_index!r} is invalid: use a whole number from 0 to {count - 1} "
                        f"(below {contract.SHARD_COUNT}={count})")
        return 0, 1
    return int(raw_index), count


def import_transform(spec: str) -> tuple[Callable[[dict], dict], list]:
    """Import the transform ``module:function``; return it and its module's ``OUTPUT_COLUMNS`` as schema fields.

    ``OUTPUT_COLUMNS`` maps a column name to a type in DDL syntax (``FLOAT64``, ``ARRAY<STRING>``,
    ``STRUCT<a INT64, b STRING>``) or to a ``bigquery.SchemaField``; a bad type is a JobError.
    """
    module_name, _, function_name = spec.partition(":")
    named = f"{TRANSFORM}={spec!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise JobError(f"{named} cannot be imported (no module {exc.name!r}): check the module name") from None
        raise JobError(
            f"{named} cannot be imported: it imports {exc.name!r}, which is not installed; "
            "add it to etl_job/requirements.txt"
        ) from None
    except SyntaxError as exc:
        raise JobError(
            f"{named} cannot be imported: syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}; fix that line"
        ) from None
    except Exception as exc:  # noqa: BLE001 - anything the module's top level raises
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise JobError(
            f"{named} cannot be imported: {type(exc).__name__}: {str(exc)[:300]} "
            f"(raised in {where.filename}, line {where.lineno}); fix the module's top-level code"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        raise JobError(
            f"{named} cannot be imported (module {module_name!r} has no {function_name!r}): check the function name"
        )
    if not callable(function):
        raise JobError(f"{named} is not a function: point it at a function taking and returning a row dict")
    columns = getattr(module, "OUTPUT_COLUMNS", None) or {}
    if not isinstance(columns, Mapping):
        raise JobError(
            f"{module_name}.OUTPUT_COLUMNS={columns!r} is invalid: map each new column name to a BigQuery type, "
            "e.g. {'sentiment': 'FLOAT64', 'tags': 'ARRAY<STRING>', 'address': 'STRUCT<city STRING, zip STRING>'}"
        )
    from etl_job import schema  # imports the google client: only once the job runs

    return function, schema.output_fields(module_name, columns)
