"""The job's configuration: its environment validated once at start-up with the contract's model."""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from etl_job import contract, rules
from etl_job.contract import TableId
from etl_job.errors import JobError

if TYPE_CHECKING:
    from google.cloud.bigquery import SchemaField

# Not set by the stack: a test and benchmark hook (and a way to try a transform without editing code).
TRANSFORM = contract.TRANSFORM  # module:function, default etl_job.transform:transform

DEFAULT_BATCH_SIZE = contract.DEFAULT_BATCH_SIZE
DEFAULT_TRANSFORM = "etl_job.transform:transform"
BATCH_TRANSFORM = "etl_job.transform:transform_batch"  # the same rule in the batch form (make run, make bench)
LOG_FORMATS = ("json", "text")

__all__ = ["Config", "TableId", "import_transform", "load_config"]


class Config(contract.JobSettings):
    """Validated settings for one run: the contract's, plus the job's own; holds no secrets, so it is safe to log."""

    log_format: Annotated[str, rules.one_of(LOG_FORMATS, normalise=str.lower)] = Field(
        "json", validation_alias=contract.LOG_FORMAT)
    transform: Annotated[str, rules.matching(r"[\w.]+:\w+", f"module:function, e.g. {DEFAULT_TRANSFORM}")] = Field(
        DEFAULT_TRANSFORM, validation_alias=TRANSFORM)
    shard_count: Annotated[int, contract.SHARDS_RULE] = Field(1, validation_alias=contract.SHARD_COUNT)
    shard_index: int = Field(0, validation_alias=contract.SHARD_INDEX)

    @field_validator("transform")
    @classmethod
    def _one_path(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("transform_sql"):
            raise rules.invalid(detail="it and {transform_sql} are both set: a run takes one path, Python or SQL; "
                                       "unset one of them", show_value=False)
        return value

    @field_validator("shard_index", mode="plain")
    @classmethod
    def _below_count(cls, value: Any, info: ValidationInfo) -> int:
        count = info.data.get("shard_count")
        if count is None:  # the count is invalid, and that is the problem to report
            return 0
        rule = rules.whole_number(0, count - 1, allowed=f"a whole number from 0 to {count - 1} "
                                                        f"(below {{shard_count}}={count})")
        return int(rule(value))

    @property
    def errors_table(self) -> TableId:
        """Where rows the transform rejected are recorded."""
        return self.destination_table.sibling(f"{self.destination_table.table}_errors")

    @property
    def skipped_table(self) -> TableId:
        """Where the Python path records the keys its transform skipped (etl_job.SKIP): not read again on either path."""
        return self.destination_table.sibling(f"{self.destination_table.table}_skipped")

    def summary(self) -> dict[str, Any]:
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


ENV_NAMES = rules.env_names(Config)  # field -> environment variable


def load_config(env: Mapping[str, str], *, is_tty: bool = False) -> Config:
    """Validate the environment into a Config; raise JobError listing every problem and its fix.

    A variable set to "" is unset.
    """
    given = {name: env[name] for name in ENV_NAMES.values() if env.get(name)}
    given.setdefault(contract.LOG_FORMAT, "text" if is_tty else "json")
    problems = _unpaired_shard(given)
    try:
        config = Config.model_validate(given, by_alias=True, by_name=False)
    except ValidationError as error:
        problems += [_line(problem) for problem in rules.problems(error, Config)]
    if problems:
        raise JobError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _unpaired_shard(given: dict[str, str]) -> list[str]:
    """ETL_SHARD_INDEX and ETL_SHARD_COUNT: both unset (0 of 1) or both set; one alone is dropped and reported."""
    if (contract.SHARD_INDEX in given) == (contract.SHARD_COUNT in given):
        return []
    for name in contract.SHARD_SET:
        given.pop(name, None)
    return [f"{contract.SHARD_INDEX} and {contract.SHARD_COUNT} go together: set both or neither"]


def _line(problem: rules.Problem) -> str:
    """One problem in the job's words: the variable, its value, and what to set instead."""
    name = ENV_NAMES.get(problem.key, problem.key)
    if problem.value is rules.MISSING:
        return f"{name} is not set: set it to {problem.allowed}"
    fix = problem.fix(ENV_NAMES, verb="use")
    if problem.detail is None and problem.key not in _REQUIRED:
        fix += ", or unset it"
    if not problem.show_value:
        return f"{name} is invalid: {fix}"
    return f"{name}={problem.value!r} {problem.wrong}: {fix}"


_REQUIRED = {name for name, info in Config.model_fields.items() if info.is_required()}


def import_transform(spec: str) -> tuple[Callable[[Any], object], list[SchemaField]]:
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
            "add it to etl_job/requirements.in and run make lock"
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
        raise JobError(f"{named} is not a function: point it at a function taking and returning a row dict, or a pyarrow Table (@etl_job.batch_transform)")
    columns = getattr(module, "OUTPUT_COLUMNS", None) or {}
    if not isinstance(columns, Mapping):
        raise JobError(
            f"{module_name}.OUTPUT_COLUMNS={columns!r} is invalid: map each new column name to a BigQuery type, "
            "e.g. {'sentiment': 'FLOAT64', 'tags': 'ARRAY<STRING>', 'address': 'STRUCT<city STRING, zip STRING>'}"
        )
    from etl_job import schema  # imports the google client: only once the job runs

    return function, schema.output_fields(module_name, columns)
