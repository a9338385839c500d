"""The stack's configuration: read once from CDK context, validated, frozen."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from etl_job import contract
from stacks import limits, schedule_expression

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"
JOB_DIR = Path(__file__).resolve().parent.parent / "etl_job"  # where transform_sql may name a .sql file

# Every pattern is applied with fullmatch: `$` would also accept a trailing newline.
_STAGE = re.compile(r"[a-z][a-z0-9-]{0,19}")
_TABLE = re.compile(contract.TABLE_ID_PATTERN)
_COLUMN = re.compile(contract.COLUMN_PATTERN)
_VPC = re.compile(r"vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_SUBNET = re.compile(r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_WIF_PROVIDER = re.compile(contract.WIF_PROVIDER_PATTERN)
_SERVICE_ACCOUNT = re.compile(contract.SERVICE_ACCOUNT_PATTERN)
_SQL_FILE = re.compile(contract.SQL_FILE_PATTERN)

# Context keys that belong to the CDK itself or to this file's layout, not to the stack.
_LAYOUT_KEYS = ("defaults", "stages", "cli-telemetry")


class ConfigError(ValueError):
    """A configuration value the stack cannot be built from; the message names the key and the fix."""


@dataclass(frozen=True)
class StageConfig:
    """Everything that varies between stages, validated. Built once in app.py."""

    stage: str
    schedule: str
    schedule_enabled: bool
    cpu: int
    memory_mib: int
    architecture: str
    capacity: str
    source_table: str
    destination_table: str
    key_column: str
    batch_size: int
    concurrency: int
    log_level: str
    timeout_minutes: int
    log_retention_days: int
    log_removal_policy: str
    log_kms_key: bool
    secret_kms_key: bool
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    assign_public_ip: bool
    google_credentials_secret: str | None
    alarm_email: str | None
    expected_run_minutes: int
    google_auth: str
    workload_identity_provider: str | None
    google_service_account: str | None
    shards: int
    max_parallel_shards: int
    source_filter: str | None
    transform_sql: str | None  # the SELECT list itself (read from etl_job/<name>.sql when the key names a file)
    allow_overlapping_schedule: bool
    break_glass_role_arn: str | None
    flow_logs: bool
    max_bytes_billed: int
    source_table_gib: float | None

    @property
    def stack_name(self) -> str:
        return f"{limits.STACK_NAME_PREFIX}-{self.stage}"


KEYS = tuple(f.name for f in fields(StageConfig))
# Keys whose absence means "not set" (the CDK drops null context values).
OPTIONAL_KEYS = (
    "vpc_id", "subnet_ids", "google_credentials_secret", "alarm_email", "workload_identity_provider",
    "google_service_account", "source_filter", "transform_sql", "break_glass_role_arn", "source_table_gib",
)
_HOW = "set it in cdk.json (\"defaults\" or \"stages\") or override it with -c {key}=VALUE"


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {value!r} is not valid; {allowed}. ({_HOW.format(key=key)})")


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise _fail(key, value, f"expected a whole number from {low} to {high}")
    number = int(str(value).strip())
    if not low <= number <= high:
        raise _fail(key, value, f"expected a whole number from {low} to {high}")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _fail(key, value, "expected true or false")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _fail(key, value, "allowed: " + ", ".join(allowed))
    return value


def _pattern(key: str, value: Any, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(key, value, allowed)
    return value


def _optional(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and value.strip() in ("", "null", "none")) else value


def _subnets(value: Any) -> tuple[str, ...]:
    if _optional(value) is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _fail("subnet_ids", value, "expected subnet ids as a list or a comma-separated string")
    return tuple(_pattern("subnet_ids", str(s).strip(), _SUBNET, "expected ids like subnet-0123456789abcdef0") for s in items)


def _secret(value: Any) -> str | None:
    value = _optional(value)
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("arn:"):
        return _pattern("google_credentials_secret", value, _SECRET_ARN,
                        "expected a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf) or a secret name")
    return _pattern("google_credentials_secret", value, _SECRET_NAME,
                    "expected a secret name (letters, digits and /_+=.@-) or ARN")


_PROVIDER_SOURCE = (
    "copy the provider's name from `gcloud iam workload-identity-pools providers describe PROVIDER "
    "--workload-identity-pool=POOL --location=global --format='value(name)'` (or the GCP console: IAM & Admin > "
    "Workload Identity Federation > the pool > the provider), e.g. "
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/etl-pool/providers/aws-etl"
)


def _provider(value: Any) -> str | None:
    value = _optional(value)
    if value is None:
        return None
    text = value.strip().removeprefix("https:") if isinstance(value, str) else value
    if isinstance(text, str) and text.startswith("projects/"):
        text = "//iam.googleapis.com/" + text  # what `providers describe` prints
    if isinstance(text, str) and not _WIF_PROVIDER.fullmatch(text) and re.fullmatch(
        contract.WIF_PROVIDER_PATTERN.replace("[0-9]{1,20}", "[^/]+"), text
    ):
        raise _fail("workload_identity_provider", value, "it needs the project NUMBER, not the project id: "
                    "`gcloud projects describe PROJECT_ID --format='value(projectNumber)'`")
    return _pattern("workload_identity_provider", text, _WIF_PROVIDER, "expected a provider's full resource name; "
                    + _PROVIDER_SOURCE)


def _google_auth(raw: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    mode = _choice("google_auth", raw["google_auth"], contract.GOOGLE_AUTH_MODES)
    provider = _provider(raw["workload_identity_provider"])
    service_account = _optional(raw["google_service_account"])
    if service_account is not None:
        service_account = _pattern(
            "google_service_account", str(service_account).strip(), _SERVICE_ACCOUNT,
            "expected a service account's e-mail from `gcloud iam service-accounts list --format='value(email)'` "
            "(GCP console: IAM & Admin > Service Accounts), e.g. etl-job@my-project.iam.gserviceaccount.com")
    if mode == "workload_identity":
        if provider is None:
            raise _fail("workload_identity_provider", raw["workload_identity_provider"],
                        "google_auth=workload_identity needs it; " + _PROVIDER_SOURCE)
        if _optional(raw["google_credentials_secret"]) is not None or _bool("secret_kms_key", raw["secret_kms_key"]):
            raise _fail("google_auth", mode, "workload_identity uses no secret: unset google_credentials_secret "
                        "and secret_kms_key, or use google_auth=key")
    elif provider is not None or service_account is not None:
        raise _fail("google_auth", mode, "workload_identity_provider and google_service_account are for "
                    "google_auth=workload_identity: set that, or remove them")
    return mode, provider, service_account


def _sql(key: str, value: Any) -> str | None:
    """Optional SQL text (source_filter, transform_sql): BigQuery checks it with a dry run when the job starts."""
    value = _optional(value)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(key, value, "expected SQL text")
    if key == "transform_sql" and _SQL_FILE.fullmatch(value.strip()):
        path = JOB_DIR / value.strip()
        if not path.is_file():
            raise _fail(key, value, f"no file {value.strip()} next to etl_job/transform.py: create it, "
                                    "or write the SELECT list itself")
        value = path.read_text()
    problem = contract.sql_text_problem(value)
    if problem:
        raise _fail(key, value if len(value) < 80 else value[:80] + "...", problem)
    return value.strip()


def _schedule(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("schedule", value, "expected cron(...) or rate(...)")
    try:
        schedule_expression.validate(value.strip())
    except schedule_expression.ScheduleError as error:
        raise _fail("schedule", value, f"{error}; e.g. cron(0 5 * * ? *) for 05:00 UTC daily or rate(12 hours)") from None
    return value.strip()


def _schedule_fits_timeout(schedule: str, timeout_minutes: int, allow_overlap: bool) -> None:
    shortest = schedule_expression.shortest_gap_minutes(schedule)
    if shortest is not None and shortest < timeout_minutes and not allow_overlap:
        raise _fail(
            "schedule", schedule,
            f"it starts runs {shortest} min apart, less than timeout_minutes={timeout_minutes}, so runs can pile up "
            "(each later one exits 5 while the first goes on); run less often, lower timeout_minutes, or set "
            "allow_overlapping_schedule=true to accept it",
        )


def _gib(key: str, value: Any) -> float | None:
    if _optional(value) is None:
        return None
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else -1.0
    except ValueError:
        number = -1.0
    if not 0 < number <= limits.MAX_TABLE_GIB:
        raise _fail(key, value, f"expected the source table's size in GiB, above 0 and at most {limits.MAX_TABLE_GIB}")
    return number


def _check_unknown(values: Mapping[str, Any], where: str) -> None:
    for key in values:
        if key in KEYS or key in _LAYOUT_KEYS or ":" in key or key.startswith("@"):
            continue
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(KEYS)
        raise ConfigError(f"unknown config key '{key}' in {where}; {hint}")


def read_cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` object of cdk.json (for `python app.py` and tests, which the CLI does not feed)."""
    return json.loads(path.read_text())["context"]


def load(context: Mapping[str, Any]) -> StageConfig:
    """Build the validated config: cdk.json ``defaults`` < ``stages[stage]`` < flat keys (``-c key=value``).

    Raise ConfigError naming the key, the value and what is allowed.
    """
    defaults = context.get("defaults")
    stages = context.get("stages")
    if not isinstance(defaults, dict) or not isinstance(stages, dict):
        raise ConfigError("cdk.json context needs a \"defaults\" object and a \"stages\" object; restore them from git")
    overrides = {k: v for k, v in context.items() if k in KEYS}
    _check_unknown(context, "the CDK context (-c or cdk.json)")
    _check_unknown(defaults, "cdk.json \"defaults\"")
    stage = overrides.get("stage", defaults.get("stage"))
    stage = _pattern("stage", stage, _STAGE, "a stage is 1-20 lower-case letters, digits or '-', starting with a letter")
    if stage not in stages:
        raise ConfigError(
            f"config key 'stage': {stage!r} is not a stage in cdk.json; known stages: {', '.join(sorted(stages))}. "
            f"Add it under \"stages\" in cdk.json to create it."
        )
    for name, values in stages.items():
        _check_unknown(values, f"cdk.json \"stages\".\"{name}\"")
    raw = {**dict.fromkeys(OPTIONAL_KEYS), **defaults, **stages[stage], **overrides, "stage": stage}
    missing = [key for key in KEYS if key not in raw]
    if missing:
        raise ConfigError(f"config keys missing from cdk.json \"defaults\": {', '.join(missing)}")

    cpu = _int("cpu", raw["cpu"], 256, 16384)
    if cpu not in limits.FARGATE_MEMORY_MIB_BY_CPU:
        raise _fail("cpu", raw["cpu"], "Fargate CPU units: " + ", ".join(map(str, limits.FARGATE_MEMORY_MIB_BY_CPU)))
    memory_mib = _int("memory_mib", raw["memory_mib"], 512, 122880)
    allowed_memory = limits.FARGATE_MEMORY_MIB_BY_CPU[cpu]
    if memory_mib not in allowed_memory:
        shown = ", ".join(map(str, allowed_memory)) if len(allowed_memory) <= 8 else f"{allowed_memory[0]}-{allowed_memory[-1]} in steps of {allowed_memory[1] - allowed_memory[0]}"
        raise _fail("memory_mib", raw["memory_mib"], f"with cpu={cpu} Fargate allows {shown} MiB")
    retention = _int("log_retention_days", raw["log_retention_days"], 1, 3653)
    if retention not in limits.LOG_RETENTION_DAYS:
        raise _fail("log_retention_days", raw["log_retention_days"],
                    "CloudWatch allows " + ", ".join(map(str, limits.LOG_RETENTION_DAYS)))
    source = _pattern("source_table", raw["source_table"], _TABLE, "expected a BigQuery table id project.dataset.table")
    destination = _pattern("destination_table", raw["destination_table"], _TABLE, "expected a BigQuery table id project.dataset.table")
    if source == destination:
        raise _fail("destination_table", destination, "it must differ from source_table (the job merges into it)")
    vpc_id = _optional(raw["vpc_id"])
    subnet_ids = _subnets(raw["subnet_ids"])
    if vpc_id is not None:
        vpc_id = _pattern("vpc_id", vpc_id, _VPC, "expected an id like vpc-0123456789abcdef0")
        if not subnet_ids:
            raise _fail("subnet_ids", raw["subnet_ids"], "with vpc_id, name the subnets the task runs in")
    elif subnet_ids:
        raise _fail("vpc_id", raw["vpc_id"], "subnet_ids needs the vpc_id they belong to")
    timeout_minutes = _int("timeout_minutes", raw["timeout_minutes"], 1, contract.MAX_TIMEOUT_MINUTES)
    expected_run_minutes = _int("expected_run_minutes", raw["expected_run_minutes"], 1, contract.MAX_TIMEOUT_MINUTES)
    if expected_run_minutes > timeout_minutes:
        raise _fail("expected_run_minutes", raw["expected_run_minutes"], f"a run expected to last longer than timeout_minutes={timeout_minutes} would always time out")
    shards = _int("shards", raw["shards"], 1, contract.MAX_SHARDS)
    max_parallel_shards = _int("max_parallel_shards", raw["max_parallel_shards"], 1, limits.MAX_PARALLEL_SHARDS)
    alarm_email = _optional(raw["alarm_email"])
    if alarm_email is not None:
        alarm_email = _pattern("alarm_email", alarm_email, _EMAIL, "expected an e-mail address")
    google_auth, provider, service_account = _google_auth(raw)
    schedule = _schedule(raw["schedule"])
    allow_overlapping_schedule = _bool("allow_overlapping_schedule", raw["allow_overlapping_schedule"])
    _schedule_fits_timeout(schedule, timeout_minutes, allow_overlapping_schedule)
    break_glass = _optional(raw["break_glass_role_arn"])
    if break_glass is not None:
        break_glass = _pattern("break_glass_role_arn", break_glass, _ROLE_ARN,
                               "expected an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME")
        if google_auth != "key" or _optional(raw["google_credentials_secret"]) is not None:
            raise _fail("break_glass_role_arn", break_glass, "it is a second reader of the secret the stack creates "
                        "(google_auth=key without google_credentials_secret); your own secret's policy is yours to set")
    flow_logs = _bool("flow_logs", raw["flow_logs"])
    if flow_logs and vpc_id is not None:
        raise _fail("flow_logs", raw["flow_logs"], "the stack adds flow logs only to the VPC it creates; "
                    "with vpc_id, enable flow logs on your VPC yourself and set flow_logs=false")

    return StageConfig(
        stage=stage,
        schedule=schedule,
        schedule_enabled=_bool("schedule_enabled", raw["schedule_enabled"]),
        cpu=cpu,
        memory_mib=memory_mib,
        architecture=_choice("architecture", raw["architecture"], limits.ARCHITECTURES),
        capacity=_choice("capacity", raw["capacity"], limits.CAPACITIES),
        source_table=source,
        destination_table=destination,
        key_column=_pattern("key_column", raw["key_column"], _COLUMN, "expected a BigQuery column name"),
        batch_size=_int("batch_size", raw["batch_size"], 1, contract.MAX_BATCH_SIZE),
        concurrency=_int("concurrency", raw["concurrency"], 1, contract.MAX_CONCURRENCY),
        log_level=_choice("log_level", raw["log_level"], contract.LOG_LEVELS),
        timeout_minutes=timeout_minutes,
        log_retention_days=retention,
        log_removal_policy=_choice("log_removal_policy", raw["log_removal_policy"], limits.REMOVAL_POLICIES),
        log_kms_key=_bool("log_kms_key", raw["log_kms_key"]),
        secret_kms_key=_bool("secret_kms_key", raw["secret_kms_key"]),
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        assign_public_ip=_bool("assign_public_ip", raw["assign_public_ip"]),
        google_credentials_secret=_secret(raw["google_credentials_secret"]),
        alarm_email=alarm_email,
        expected_run_minutes=expected_run_minutes,
        google_auth=google_auth,
        workload_identity_provider=provider,
        google_service_account=service_account,
        shards=shards,
        max_parallel_shards=max_parallel_shards,
        source_filter=_sql("source_filter", raw["source_filter"]),
        transform_sql=_sql("transform_sql", raw["transform_sql"]),
        allow_overlapping_schedule=allow_overlapping_schedule,
        break_glass_role_arn=break_glass,
        flow_logs=flow_logs,
        max_bytes_billed=_int("max_bytes_billed", raw["max_bytes_billed"],
                              contract.MIN_BYTES_BILLED, contract.MAX_BYTES_BILLED_VALUE),
        source_table_gib=_gib("source_table_gib", raw["source_table_gib"]),
    )
