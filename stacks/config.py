"""The stack's configuration: read once from CDK context, validated with the contract's model, frozen."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from etl_job import contract, rules
from stacks import launch, limits, schedule_expression

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"
JOB_DIR = Path(__file__).resolve().parent.parent / "etl_job"  # where transform_sql may name a .sql file

# Every pattern is applied with fullmatch: `$` would also accept a trailing newline.
_SUBNET = re.compile(r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_WIF_PROVIDER = re.compile(contract.WIF_PROVIDER_PATTERN)
_WIF_PROVIDER_BY_PROJECT_ID = re.compile(contract.WIF_PROVIDER_PATTERN.replace("[0-9]{1,20}", "[^/]+"))
_SERVICE_ACCOUNT = re.compile(contract.SERVICE_ACCOUNT_PATTERN)
_SQL_FILE = re.compile(contract.SQL_FILE_PATTERN)

# Context keys that belong to the CDK itself or to this file's layout, not to the stack.
_LAYOUT_KEYS = ("defaults", "stages", "cli-telemetry")
_HOW = "set it in cdk.json (\"defaults\" or \"stages\") or override it with -c {key}=VALUE"
_PROVIDER_SOURCE = (
    "copy the provider's name from `gcloud iam workload-identity-pools providers describe PROVIDER "
    "--workload-identity-pool=POOL --location=global --format='value(name)'` (or the GCP console: IAM & Admin > "
    "Workload Identity Federation > the pool > the provider), e.g. "
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/etl-pool/providers/aws-etl"
)


class ConfigError(ValueError):
    """A configuration value the stack cannot be built from; one line per problem, naming the key and the fix."""

    def lines(self) -> list[str]:
        """The problems as the command line prints them: ``error: ...``, one line each."""
        return [f"error: {line}" for line in str(self).splitlines()]


def _listed(values: Collection[int], detail: str) -> rules.Rule:
    """A whole number that is one of ``values`` (a service's fixed list)."""
    number = rules.whole_number(min(values), max(values))

    def parse(value: Any) -> int:
        parsed: int = number(value)
        if parsed not in values:
            raise rules.invalid(detail=detail)
        return parsed

    return rules.Rule(number.allowed, parse)


def _subnets(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise rules.invalid(allowed="subnet ids as a list or a comma-separated string")
    subnets = tuple(str(item).strip() for item in items)
    if not all(_SUBNET.fullmatch(subnet) for subnet in subnets):
        raise ValueError(value)
    return subnets


def _secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    if value.startswith("arn:") and not _SECRET_ARN.fullmatch(value):
        raise rules.invalid(allowed="a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:"
                                    "NAME-AbCdEf) or a secret name")
    if not value.startswith("arn:") and not _SECRET_NAME.fullmatch(value):
        raise ValueError(value)
    return value


def _provider(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().removeprefix("https:")
    if text.startswith("projects/"):
        text = "//iam.googleapis.com/" + text  # what `providers describe` prints
    if _WIF_PROVIDER.fullmatch(text):
        return text
    if _WIF_PROVIDER_BY_PROJECT_ID.fullmatch(text):
        raise rules.invalid(detail="it needs the project NUMBER, not the project id: "
                                   "`gcloud projects describe PROJECT_ID --format='value(projectNumber)'`")
    raise ValueError(value)


def _service_account(value: Any) -> str:
    if not isinstance(value, str) or not _SERVICE_ACCOUNT.fullmatch(value.strip()):
        raise ValueError(value)
    return value.strip()


def _schedule(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    try:
        schedule_expression.validate(value.strip())
    except schedule_expression.ScheduleError as error:
        raise rules.invalid(detail=f"{error}; e.g. cron(0 5 * * ? *) for 05:00 UTC daily or rate(12 hours)") from None
    return value.strip()


_FLAG = rules.flag()
# Whole minutes on the stack's side: its alarm windows and the fan-out's task timeout are counted in whole
# minutes. The job's rule (contract.TIMEOUT_RULE) also takes fractions, which its tests use to time out fast.
_MINUTES = rules.whole_number(1, contract.MAX_TIMEOUT_MINUTES)
_RULES = {
    "cpu": _listed(limits.FARGATE_MEMORY_MIB_BY_CPU, "Fargate CPU units: " + ", ".join(map(str, limits.FARGATE_MEMORY_MIB_BY_CPU))),
    "memory_mib": rules.whole_number(512, 122880),
    "log_retention_days": _listed(limits.LOG_RETENTION_DAYS,
                                  "CloudWatch allows " + ", ".join(map(str, limits.LOG_RETENTION_DAYS))),
    "vpc_id": rules.matching(r"vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})", "an id like vpc-0123456789abcdef0").or_unset(),
    "subnet_ids": rules.Rule("ids like subnet-0123456789abcdef0", _subnets),
    "google_credentials_secret": rules.Rule("a secret name (letters, digits and /_+=.@-) or ARN", _secret, optional=True),
    "workload_identity_provider": rules.Rule("a provider's full resource name; " + _PROVIDER_SOURCE, _provider,
                                             optional=True),
    "google_service_account": rules.Rule(
        "a service account's e-mail from `gcloud iam service-accounts list --format='value(email)'` "
        "(GCP console: IAM & Admin > Service Accounts), e.g. etl-job@my-project.iam.gserviceaccount.com",
        _service_account, optional=True),
    "break_glass_role_arn": rules.matching(r"arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
                                           "an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME").or_unset(),
    "alarm_email": rules.matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an e-mail address").or_unset(),
    "source_table_gib": rules.number_above(
        0, limits.MAX_TABLE_GIB, allowed=f"the source table's size in GiB, above 0 and at most {limits.MAX_TABLE_GIB}",
    ).or_unset(),
}


class StageConfig(contract.JobSettings):
    """Everything that varies between stages, validated: the job's settings (the contract) and the stack's own.

    Built once in app.py. Fields are validated in this order; a check across keys sits on the later one.
    """

    timeout_minutes: Annotated[int, _MINUTES]
    max_bytes_billed: Annotated[int, contract.BYTES_BILLED_RULE]
    expected_run_minutes: Annotated[int, _MINUTES]
    allow_overlapping_schedule: Annotated[bool, _FLAG]
    schedule: Annotated[str, rules.Rule("cron(...) or rate(...)", _schedule)]
    schedule_enabled: Annotated[bool, _FLAG]
    cpu: Annotated[int, _RULES["cpu"]]
    memory_mib: Annotated[int, _RULES["memory_mib"]]
    architecture: Annotated[str, rules.one_of(limits.ARCHITECTURES)]
    capacity: Annotated[str, rules.one_of(launch.CAPACITIES)]
    log_retention_days: Annotated[int, _RULES["log_retention_days"]]
    log_removal_policy: Annotated[str, rules.one_of(limits.REMOVAL_POLICIES)]
    log_kms_key: Annotated[bool, _FLAG]
    secret_kms_key: Annotated[bool, _FLAG]
    vpc_id: Annotated[str | None, _RULES["vpc_id"]]
    subnet_ids: Annotated[tuple[str, ...], _RULES["subnet_ids"]]
    flow_logs: Annotated[bool, _FLAG]
    assign_public_ip: Annotated[bool, _FLAG]
    google_credentials_secret: Annotated[str | None, _RULES["google_credentials_secret"]]
    workload_identity_provider: Annotated[str | None, _RULES["workload_identity_provider"]]
    google_service_account: Annotated[str | None, _RULES["google_service_account"]]
    google_auth: Annotated[str, rules.one_of(contract.GOOGLE_AUTH_MODES)]
    break_glass_role_arn: Annotated[str | None, _RULES["break_glass_role_arn"]]
    alarm_email: Annotated[str | None, _RULES["alarm_email"]]
    shards: Annotated[int, contract.SHARDS_RULE]
    max_parallel_shards: Annotated[int, rules.whole_number(1, limits.MAX_PARALLEL_SHARDS)]
    source_table_gib: Annotated[float | None, _RULES["source_table_gib"]]

    @property
    def stack_name(self) -> str:
        return f"{limits.STACK_NAME_PREFIX}-{self.stage}"

    @field_validator("transform_sql", mode="before")
    @classmethod
    def _read_sql_file(cls, value: Any) -> Any:
        """transform_sql may name a .sql file in etl_job/: the job then gets the file's text."""
        if not isinstance(value, str) or not _SQL_FILE.fullmatch(value.strip()):
            return value
        path = JOB_DIR / value.strip()
        if not path.is_file():
            raise rules.invalid(detail=f"no file {value.strip()} next to etl_job/transform.py: create it, "
                                       "or write the SELECT list itself")
        return path.read_text()

    @field_validator("expected_run_minutes")
    @classmethod
    def _within_timeout(cls, value: int, info: ValidationInfo) -> int:
        timeout = info.data.get("timeout_minutes")
        if timeout is not None and value > timeout:
            raise rules.invalid(detail=f"a run expected to last longer than timeout_minutes={timeout} would always "
                                       "time out")
        return value

    @field_validator("schedule")
    @classmethod
    def _fits_timeout(cls, value: str, info: ValidationInfo) -> str:
        timeout, allow = info.data.get("timeout_minutes"), info.data.get("allow_overlapping_schedule", True)
        shortest = schedule_expression.shortest_gap_minutes(value)
        if timeout is not None and shortest is not None and shortest < timeout and not allow:
            raise rules.invalid(detail=(
                f"it starts runs {shortest} min apart, less than timeout_minutes={timeout}, so runs can pile up "
                "(each later one exits 5 while the first goes on); run less often, lower timeout_minutes, or set "
                "allow_overlapping_schedule=true to accept it"))
        return value

    @field_validator("memory_mib")
    @classmethod
    def _fits_cpu(cls, value: int, info: ValidationInfo) -> int:
        cpu = info.data.get("cpu")
        allowed = limits.FARGATE_MEMORY_MIB_BY_CPU.get(cpu or 0)
        if allowed and value not in allowed:
            shown = (", ".join(map(str, allowed)) if len(allowed) <= 8
                     else f"{allowed[0]}-{allowed[-1]} in steps of {allowed[1] - allowed[0]}")
            raise rules.invalid(detail=f"with cpu={cpu} Fargate allows {shown} MiB")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _in_the_vpc(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if "vpc_id" not in info.data:
            return value
        if info.data["vpc_id"] is not None and not value:
            raise rules.invalid(detail="with vpc_id, name the subnets the task runs in")
        if info.data["vpc_id"] is None and value:
            raise rules.invalid(detail="subnet_ids needs the vpc_id they belong to", key="vpc_id", value=None)
        return value

    @field_validator("flow_logs")
    @classmethod
    def _only_for_a_new_vpc(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("vpc_id") is not None:
            raise rules.invalid(detail="the stack adds flow logs only to the VPC it creates; with vpc_id, enable flow "
                                       "logs on your VPC yourself and set flow_logs=false")
        return value

    @field_validator("google_auth")
    @classmethod
    def _auth_settings_fit_the_mode(cls, mode: str, info: ValidationInfo) -> str:
        names = ("google_credentials_secret", "secret_kms_key", "workload_identity_provider", "google_service_account")
        if not all(name in info.data for name in names):
            return mode
        secret, kms_key, provider, account = (info.data[name] for name in names)
        if mode == "workload_identity" and provider is None:
            raise rules.invalid(detail="google_auth=workload_identity needs it; " + _PROVIDER_SOURCE,
                                key="workload_identity_provider", value=None)
        if mode == "workload_identity" and (secret is not None or kms_key):
            raise rules.invalid(detail="workload_identity uses no secret: unset google_credentials_secret and "
                                       "secret_kms_key, or use google_auth=key")
        if mode == "key" and (provider is not None or account is not None):
            raise rules.invalid(detail="workload_identity_provider and google_service_account are for "
                                       "google_auth=workload_identity: set that, or remove them")
        return mode

    @field_validator("break_glass_role_arn")
    @classmethod
    def _reads_the_stacks_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or "google_auth" not in info.data:
            return value
        if info.data["google_auth"] != "key" or info.data.get("google_credentials_secret") is not None:
            raise rules.invalid(detail="it is a second reader of the secret the stack creates (google_auth=key "
                                       "without google_credentials_secret); your own secret's policy is yours to set")
        return value


KEYS = tuple(StageConfig.model_fields)
# Keys whose absence means "not set" (the CDK drops null context values).
OPTIONAL_KEYS = (
    "vpc_id", "subnet_ids", "google_credentials_secret", "alarm_email", "workload_identity_provider",
    "google_service_account", "source_filter", "transform_sql", "break_glass_role_arn", "source_table_gib",
)
_NAMES = {key: key for key in KEYS}


def _line(problem: rules.Problem) -> str:
    """One problem in the stack's words: the key, its value, what is allowed, and where to set it."""
    value = problem.value
    shown = value[:80] + "..." if isinstance(value, str) and len(value) > 80 else value
    return (f"config key '{problem.key}': {shown!r} is not valid; {problem.fix(_NAMES, verb='expected')}. "
            f"({_HOW.format(key=problem.key)})")


def _optional(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and value.strip() in ("", "null", "none")) else value


def _check_unknown(values: Mapping[str, Any], where: str) -> None:
    for key in values:
        if key in KEYS or key in _LAYOUT_KEYS or ":" in key or key.startswith("@"):
            continue
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(KEYS)
        raise ConfigError(f"unknown config key '{key}' in {where}; {hint}")


def _stage(value: Any, stages: Mapping[str, Any]) -> str:
    """The stage to build: valid by the contract's rule, and defined under "stages"."""
    try:
        stage: str = contract.STAGE_RULE(value)
    except PydanticCustomError as error:
        raise ConfigError(_line(rules.problem_of("stage", value, error))) from None
    if stage not in stages:
        raise ConfigError(
            f"config key 'stage': {stage!r} is not a stage in cdk.json; known stages: {', '.join(sorted(stages))}. "
            f"Add it under \"stages\" in cdk.json to create it."
        )
    return stage


def read_cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` object of cdk.json (for `python app.py` and tests, which the CLI does not feed)."""
    context: dict[str, Any] = json.loads(path.read_text())["context"]
    return context


def load(context: Mapping[str, Any]) -> StageConfig:
    """Build the validated config: cdk.json ``defaults`` < ``stages[stage]`` < flat keys (``-c key=value``).

    Raise ConfigError naming the key, the value and what is allowed, one line per problem.
    """
    defaults = context.get("defaults")
    stages = context.get("stages")
    if not isinstance(defaults, dict) or not isinstance(stages, dict):
        raise ConfigError("cdk.json context needs a \"defaults\" object and a \"stages\" object; restore them from git")
    overrides = {k: v for k, v in context.items() if k in KEYS}
    _check_unknown(context, "the CDK context (-c or cdk.json)")
    _check_unknown(defaults, "cdk.json \"defaults\"")
    stage = _stage(overrides.get("stage", defaults.get("stage")), stages)
    for name, values in stages.items():
        _check_unknown(values, f"cdk.json \"stages\".\"{name}\"")
    raw = {**dict.fromkeys(OPTIONAL_KEYS), **defaults, **stages[stage], **overrides, "stage": stage}
    missing = [key for key in KEYS if key not in raw]
    if missing:
        raise ConfigError(f"config keys missing from cdk.json \"defaults\": {', '.join(missing)}")
    raw = {key: _optional(value) if key in OPTIONAL_KEYS else value for key, value in raw.items()}
    try:
        return StageConfig.model_validate(raw, by_alias=False, by_name=True)
    except ValidationError as error:
        raise ConfigError("\n".join(_line(problem) for problem in rules.problems(error, StageConfig))) from None
