"""The environment-variable contract between the CDK stack and the job, defined once.

The stack (``stacks/``) sets exactly ``STACK_SET`` plus, per ``google_auth`` mode, ``AUTH_PLAIN`` as
plain values and ``AUTH_SECRETS`` as ECS secrets in the task definition, and the fan-out state
machine sets ``SHARD_SET`` per task as container overrides; ``OPTIONAL_SET`` only where configured; the job
validates them at start-up.
Tests check both sides against this module.
"""

SOURCE_TABLE = "ETL_SOURCE_TABLE"  # project.dataset.table to extract from
DESTINATION_TABLE = "ETL_DESTINATION_TABLE"  # project.dataset.table to merge into
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


def sql_text_problem(value: str) -> str | None:
    """Why a piece of SQL text (source_filter, transform_sql) cannot be used, or None; BigQuery checks the rest."""
    if not value.strip():
        return "it is blank: unset it, or write the SQL"
    if len(value) > MAX_SQL_CHARS:
        return f"it is {len(value)} characters long, more than {MAX_SQL_CHARS}: shorten it, or move it into a view"
    if "\x00" in value:
        return "it contains a NUL character: remove it"
    return None


def workload_identity_config(*, provider: str, service_account: str | None) -> dict:
    """The external_account credential configuration the stack sets in GOOGLE_WORKLOAD_IDENTITY_CONFIG.

    The shape ``gcloud iam workload-identity-pools create-cred-config --aws`` writes, without the EC2
    metadata URLs: the job reads the task role's credentials through the AWS SDK instead.
    """
    config = {
        "type": "external_account",
        "audience": provider,
        "subject_token_type": AWS_SUBJECT_TOKEN_TYPE,
        "token_url": GOOGLE_STS_TOKEN_URL,
        "credential_source": {"environment_id": "aws1", "regional_cred_verification_url": AWS_CRED_VERIFICATION_URL},
    }
    if service_account:
        config["service_account_impersonation_url"] = GOOGLE_IMPERSONATION_URL.format(email=service_account)
    return config
