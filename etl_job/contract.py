"""The environment-variable contract between the CDK stack and the job, defined once.

The stack (``stacks/``) sets exactly ``STACK_SET`` plus the secret ``GOOGLE_CREDENTIALS_JSON``;
the job validates them at start-up. Tests check both sides against this module.
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

# Injected by ECS from Secrets Manager, never a plain environment value in the template.
GOOGLE_CREDENTIALS_JSON = "GOOGLE_CREDENTIALS_JSON"
# Optional, never set by the stack: module:function of an alternative transform (tests, trials).
TRANSFORM = "ETL_TRANSFORM"
# Local development only: point the real client at a local BigQuery (scheme required).
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"

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
)
STACK_SECRETS = (GOOGLE_CREDENTIALS_JSON,)
