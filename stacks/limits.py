"""Names, sizes and service limits the stack and its config validation share, with units in the names."""

PROJECT = "etl-pipeline"
STACK_NAME_PREFIX = "EtlPipeline"

# Fargate task sizes: CPU units -> the memory values (MiB) Fargate accepts with it.
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_MEMORY_MIB_BY_CPU: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}

# CloudWatch Logs retention values (days) that the PutRetentionPolicy API accepts.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)

ARCHITECTURES = ("x86_64", "arm64")
REMOVAL_POLICIES = ("retain", "destroy")

# The container: a numeric non-root user and group (the image creates both) and the scratch mount.
CONTAINER_NAME = "etl"
CONTAINER_USER = "10001:10001"  # user:group; a bare uid would run with group 0
SCRATCH_PATH = "/tmp"
STOP_TIMEOUT_SECONDS = 120  # Fargate's maximum; the job settles in-flight work within it

# Workload Identity Federation: the task role's fixed name, and what Google allows for the ARN it sees.
TASK_ROLE_NAME = "{prefix}-{stage}-{region}"
ECS_ROLE_SESSION_NAME_CHARS = 32  # ECS assumes the task role with the task id as the session name
GOOGLE_SUBJECT_MAX_BYTES = 127  # google.subject (mapped from the assumed-role ARN) may not be longer

# The scheduled launch: EventBridge retries a failed RunTask this often, for at most this long,
# then puts the event on the dead-letter queue.
LAUNCH_RETRY_ATTEMPTS = 3
LAUNCH_MAX_EVENT_AGE_MINUTES = 60
DLQ_RETENTION_DAYS = 14

# The fan-out (shards > 1). Each running shard has at most one INSERT in flight into the one
# destination table; once a table has had 1,500 INSERTs in a day BigQuery runs 10 at a time and
# queues 100 more, beyond which it fails them (BigQuery docs, "DML concurrency"). 20 was the limit
# of MERGEs (2 running, 20 queued), which the job used before; it is kept as a cautious cap: going
# higher also means checking Fargate's task quota and BigQuery's concurrent queries per project.
MAX_PARALLEL_SHARDS = 20
# A shard may take timeout_minutes, plus the stop grace, plus this long to be placed and pull its image.
SHARD_LAUNCH_ALLOWANCE_SECONDS = 600
# A shard whose launch fails (no Fargate capacity, throttling) is retried this often, waiting
# 30 s, 60 s, 120 s (with full jitter) in between.
SHARD_LAUNCH_RETRY_ATTEMPTS = 3
SHARD_LAUNCH_RETRY_INTERVAL_SECONDS = 30
# `make cost`: the largest source table size (GiB) an estimate accepts (1 PiB).
MAX_TABLE_GIB = 1024 * 1024
