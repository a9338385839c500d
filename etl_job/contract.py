"""The contract between the CDK stack and the job, defined once: the environment and the model both validate.

``JobSettings`` holds the settings the stack sends the job, each with its one rule: the stack validates
a stage's cdk.json config with it (``stacks.config.StageConfig`` extends it) and renders the job's
environment from it (``JobSettings.environment``); the job parses that environment with it
(``etl_job.config.Config`` extends it). The stack sets exactly ``STACK_SET`` plus, per ``google_auth``
mode, ``AUTH_PLAIN`` as plain values and ``AUTH_SECRETS`` as ECS secrets in the task definition, and the
fan-out state machine sets ``SHARD_SET`` per task as container overrides; ``OPTIONAL_SET`` only where
configured. Tests check both sides against this module.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from etl_job import rules

SOURCE_TABLE = "ETL_SOURCE_TABLE"  # project.dataset.table to extract from
DESTINATION_TABLE = "ETL_DESTINATION_TABLE"  # project.dataset.table to insert into
KEY_COLUMN = "ETL_KEY_COLUMN"  # unique key shared by source and destination
BATCH_SIZE = "ETL_BATCH_SIZE"  # rows per page and per load job
CONCURRENCY = "ETL_CONCURRENCY"  # transform workers
LOG_LEVEL = "ETL_LOG_LEVEL"  # DEBUG, INFO, WARNING, ERROR
LOG_FORMAT = "ETL_LOG_FORMAT"  # json or text; unset: text on a terminal, json otherwise
STAGE = "ETL_STAGE"  # dev, prod, ...: in logs and metrics
TIMEOUT_MINUTES = "ETL_TIMEOUT_MINUTES"  # the job stops itself cleanly after this long
MAX_BYTES_BILLED = "ETL_MAX_BYTES_BILLED"  # every query's maximum_bytes_billed (bytes); unset: no cap
# Per task, never in the task definition: the fan-out state machine's container overrides (unset: 0 of 1).
SHARD_INDEX = "ETL_SHARD_INDEX"  # this task's slice of the key space, 0 .. SHARD_COUNT - 1
SHARD_COUNT = "ETL_SHARD_COUNT"  # how many slices the run is split into

# Optional (config keys source_filter, transform_sql): set by the stack only when configured.
SOURCE_FILTER = "ETL_SOURCE_FILTER"  # a SQL predicate over the source's columns: only matching rows are read
TRANSFORM_SQL = "ETL_TRANSFORM_SQL"  # a SELECT list over the source (alias s): the transform runs inside BigQuery

# google_auth=key: injected by ECS from Secrets Manager, never a plain environment value in the template.
GOOGLE_CREDENTIALS_JSON = "GOOGLE_CREDENTIALS_JSON"
# google_auth=workload_identity: the external_account credential configuration (JSON). It holds no
# secret (an audience and two URLs), so the stack sets it as a plain value; see workload_identity_config.
GOOGLE_WORKLOAD_IDENTITY_CONFIG = "GOOGLE_WORKLOAD_IDENTITY_CONFIG"
# Optional, never set by the stack: module:function of an alternative transform (tests, trials).
TRANSFORM = "ETL_TRANSFORM"
# Local development only: point the real client at a local BigQuery (scheme required).
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"
# Local development only: the local BigQuery's Storage Read API (gRPC, host:port, no TLS); unset, the
# host of BIGQUERY_EMULATOR_HOST on its port + 10 (bqemulator's own layout: 9050 REST, 9060 gRPC).
BIGQUERY_STORAGE_EMULATOR_HOST = "BIGQUERY_STORAGE_EMULATOR_HOST"
LOCAL_GRPC_PORT_OFFSET = 10  # the "+ 10" above: the local BigQuery's gRPC port from its REST port


def local_grpc_address(rest_url: str) -> str:
    """The local BigQuery's Storage Read API (gRPC ``host:port``) beside its REST URL."""
    parts = urlsplit(rest_url)
    return f"{parts.hostname}:{(parts.port or 80) + LOCAL_GRPC_PORT_OFFSET}"


# Tests and local development only, never set by the stack: send the BigQuery requests made with the
# real credentials (not anonymous ones, unlike BIGQUERY_EMULATOR_HOST) to this URL instead of Google's.
BIGQUERY_ENDPOINT = "ETL_BIGQUERY_ENDPOINT"

# What both sides accept, so that a value the stack synthesizes is one the job starts with.
# BigQuery's rules, ASCII only: a project id (6-30 characters, optionally domain-scoped as
# example.com:my-project), a dataset, a table (BigQuery also allows Unicode and spaces in table
# names; refused here on purpose, as names are quoted into SQL). No partition decorator ($).
TABLE_ID_PATTERN = (
    r"(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>[A-Za-z0-9_-]{1,1024})"
)
COLUMN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,299}"
# A stage names the stack (EtlPipeline-<stage>), its resources and the job's logs and metrics: lower-case so
# that every AWS name built from it is valid, short so that the task role's name fits (limits.TASK_ROLE_NAME).
STAGE_PATTERN = r"[a-z][a-z0-9-]{0,19}"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_BATCH_SIZE = 100_000
MAX_CONCURRENCY = 1_000
MAX_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_SHARDS = 100
# SQL text in an environment variable (source_filter, transform_sql): ECS allows 64 KiB for a container's
# whole environment; BigQuery allows 1 MB of query text.
MAX_SQL_CHARS = 10_000
# transform_sql may name a file in etl_job/ (next to transform.py) instead: the stack reads it at synth.
SQL_FILE_PATTERN = r"[A-Za-z0-9_-]{1,100}\.sql"
# BigQuery bills at least 10 MiB per table a query reads, so a lower cap would fail every query.
MIN_BYTES_BILLED = 10 * 1024 * 1024
MAX_BYTES_BILLED_VALUE = 2**63 - 1

STACK_SET = (
    SOURCE_TABLE,
    DESTINATION_TABLE,
    KEY_COLUMN,
    BATCH_SIZE,
    CONCURRENCY,
    LOG_LEVEL,
    LOG_FORMAT,
    STAGE,
    TIMEOUT_MINUTES,
    MAX_BYTES_BILLED,
)
OPTIONAL_SET = (SOURCE_FILTER, TRANSFORM_SQL)  # in the task definition only when configured
STACK_SECRETS = (GOOGLE_CREDENTIALS_JSON,)  # google_auth=key
SHARD_SET = (SHARD_INDEX, SHARD_COUNT)

GOOGLE_AUTH_MODES = ("key", "workload_identity")
AUTH_PLAIN = {"key": (), "workload_identity": (GOOGLE_WORKLOAD_IDENTITY_CONFIG,)}
AUTH_SECRETS = {"key": STACK_SECRETS, "workload_identity": ()}

# Workload Identity Federation from AWS: the values both sides agree on.
# A provider's full resource name, as Google's STS expects it for the audience.
WIF_PROVIDER_PATTERN = (
    r"//iam\.googleapis\.com/projects/(?P<project_number>[0-9]{1,20})/locations/global/"
    r"workloadIdentityPools/(?P<pool>[a-z0-9-]{4,32})/providers/(?P<provider>[a-z0-9-]{4,32})"
)
# A service account's e-mail: user-managed (NAME@PROJECT.iam.gserviceaccount.com) or Google-provided.
SERVICE_ACCOUNT_PATTERN = (
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]@(?:[a-z0-9.:-]+\.iam|developer|appspot|cloudservices)\.gserviceaccount\.com"
)
AWS_SUBJECT_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
GOOGLE_STS_TOKEN_URL = "https://sts.googleapis.com/v1/token"
GOOGLE_IMPERSONATION_URL = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
# What google-auth signs with a custom AWS credentials supplier (its default regional STS URL).
AWS_CRED_VERIFICATION_URL = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"


def workload_identity_config(*, provider: str, service_account: str | None) -> dict[str, Any]:
    """The external_account credential configuration the stack sets in GOOGLE_WORKLOAD_IDENTITY_CONFIG.

    The shape ``gcloud iam workload-identity-pools create-cred-config --aws`` writes, without the EC2
    metadata URLs: the job reads the task role's credentials through the AWS SDK instead.
    """
    config: dict[str, Any] = {
        "type": "external_account",
        "audience": provider,
        "subject_token_type": AWS_SUBJECT_TOKEN_TYPE,
        "token_url": GOOGLE_STS_TOKEN_URL,
        "credential_source": {"environment_id": "aws1", "regional_cred_verification_url": AWS_CRED_VERIFICATION_URL},
    }
    if service_account:
        config["service_account_impersonation_url"] = GOOGLE_IMPERSONATION_URL.format(email=service_account)
    return config


class TableId(str):
    """A BigQuery table as ``project.dataset.table``: a str (it compares and prints as its id) with its parts."""

    def __new__(cls, project: str, dataset: str, table: str) -> TableId:
        return super().__new__(cls, f"{project}.{dataset}.{table}")

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle: str's would call __new__ with one argument
        return TableId.parse, (str(self),)

    @classmethod
    def parse(cls, text: str) -> TableId:
        """A table id from its text, already matched by TABLE_ID_PATTERN (datasets and tables have no dots)."""
        project, dataset, table = text.rsplit(".", 2)
        return cls(project, dataset, table)

    @property
    def project(self) -> str:
        return self.rsplit(".", 2)[0]

    @property
    def dataset(self) -> str:
        return self.rsplit(".", 2)[1]

    @property
    def table(self) -> str:
        return self.rsplit(".", 2)[2]

    @property
    def sql(self) -> str:
        """The name quoted for use in SQL."""
        return f"`{self}`"

    def sibling(self, table: str) -> TableId:
        """Another table in the same dataset."""
        return TableId(self.project, self.dataset, table)


def _sql_text(value: Any) -> str:
    """SQL text (source_filter, transform_sql) the job can send: BigQuery checks the rest with a dry run."""
    if not isinstance(value, str):
        raise ValueError(value)
    if not value.strip():
        raise rules.invalid(detail="it is blank: unset it, or write the SQL", show_value=False)
    if len(value) > MAX_SQL_CHARS:
        raise rules.invalid(detail=f"it is {len(value)} characters long, more than {MAX_SQL_CHARS}: shorten it, "
                                   "or move it into a view", show_value=False)
    if "\x00" in value:
        raise rules.invalid(detail="it contains a NUL character: remove it", show_value=False)
    return value.strip()


# The job's defaults, for a run outside the stack (the stack sets every one from cdk.json).
DEFAULT_KEY_COLUMN = "id"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_CONCURRENCY = 64
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_STAGE = "local"

# Each setting's one rule, used by both sides.
TABLE = rules.matching(TABLE_ID_PATTERN, "project.dataset.table (letters, digits, underscores; no backticks or spaces)",
                       convert=TableId.parse, wrong="is not a table id")
COLUMN = rules.matching(COLUMN_PATTERN, "a column name of letters, digits and _, not starting with a digit",
                        wrong="is not a column name")
BATCH_SIZE_RULE = rules.whole_number(1, MAX_BATCH_SIZE)
CONCURRENCY_RULE = rules.whole_number(1, MAX_CONCURRENCY)
LOG_LEVEL_RULE = rules.one_of(LOG_LEVELS, normalise=str.upper)
STAGE_RULE = rules.matching(STAGE_PATTERN, "1-20 lower-case letters, digits or '-', starting with a letter (e.g. dev, prod)")
TIMEOUT_RULE = rules.number_above(0, MAX_TIMEOUT_MINUTES)
BYTES_BILLED_RULE = rules.whole_number(MIN_BYTES_BILLED, MAX_BYTES_BILLED_VALUE)
SQL_TEXT = rules.Rule("SQL text", _sql_text, optional=True)
SHARDS_RULE = rules.whole_number(1, MAX_SHARDS)


class JobSettings(BaseModel):
    """The settings the stack sends the job, by config key; each field's alias is its environment variable."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True, extra="ignore")

    source_table: Annotated[TableId, TABLE] = Field(validation_alias=SOURCE_TABLE)
    destination_table: Annotated[TableId, TABLE] = Field(validation_alias=DESTINATION_TABLE)
    key_column: Annotated[str, COLUMN] = Field(DEFAULT_KEY_COLUMN, validation_alias=KEY_COLUMN)
    batch_size: Annotated[int, BATCH_SIZE_RULE] = Field(DEFAULT_BATCH_SIZE, validation_alias=BATCH_SIZE)
    concurrency: Annotated[int, CONCURRENCY_RULE] = Field(DEFAULT_CONCURRENCY, validation_alias=CONCURRENCY)
    log_level: Annotated[str, LOG_LEVEL_RULE] = Field(DEFAULT_LOG_LEVEL, validation_alias=LOG_LEVEL)
    stage: Annotated[str, STAGE_RULE] = Field(DEFAULT_STAGE, validation_alias=STAGE)
    timeout_minutes: Annotated[float | None, TIMEOUT_RULE.or_unset()] = Field(None, validation_alias=TIMEOUT_MINUTES)
    max_bytes_billed: Annotated[int | None, BYTES_BILLED_RULE.or_unset()] = Field(None, validation_alias=MAX_BYTES_BILLED)
    source_filter: Annotated[str | None, SQL_TEXT] = Field(None, validation_alias=SOURCE_FILTER)
    transform_sql: Annotated[str | None, SQL_TEXT] = Field(None, validation_alias=TRANSFORM_SQL)

    @field_validator("destination_table")
    @classmethod
    def _not_the_source(cls, value: TableId, info: ValidationInfo) -> TableId:
        if value == info.data.get("source_table"):
            raise rules.invalid(detail="it must differ from {source_table}: they are the same table, and the job "
                                       "writes into a separate destination")
        return value

    def environment(self) -> dict[str, str]:
        """The job's plain environment for these settings: STACK_SET, and OPTIONAL_SET where set."""
        names = rules.env_names(JobSettings)
        values = {names[key]: str(value) for key, value in self.model_dump(include=set(names), exclude_none=True).items()}
        values[LOG_FORMAT] = "json"  # the stack's metric filters read the job's log lines as JSON
        return {name: values[name] for name in (*STACK_SET, *OPTIONAL_SET) if name in values}
