"""Estimate what a stage costs from its config: `python -m ops.cost [STAGE] [-c key=value | key=value ...]`.

`-c key=value` is what `make cost STAGE=... CDK_ARGS="-c ..."` passes, as for every other target.
"""

from __future__ import annotations

import sys

from ops import prices
from stacks import config as stage_config
from stacks.schedule_expression import missed_run_window_minutes, runs_per_year


def estimate(config: stage_config.StageConfig) -> dict[str, float]:
    """Dollar figures per month (and per run) for the stack and the alternatives it replaces."""
    hours = config.expected_run_minutes / 60
    vcpu, memory_gb = config.cpu / 1024, config.memory_mib / 1024
    compute_hour = vcpu * prices.FARGATE_VCPU_HOUR[config.architecture] + memory_gb * prices.FARGATE_GB_HOUR[config.architecture]
    if config.capacity == "spot":
        compute_hour *= 1 - prices.FARGATE_SPOT_DISCOUNT
    per_run = hours * (compute_hour + (prices.PUBLIC_IPV4_HOUR if config.assign_public_ip else 0))
    runs_per_month = runs_per_year(config.schedule) / 12 if config.schedule_enabled else 0
    alarms = 2 + (missed_run_window_minutes(config.schedule, config.timeout_minutes) is not None)
    fixed = (
        (prices.SECRET_MONTH if config.google_credentials_secret is None and config.google_auth == "key" else 0)
        + prices.KMS_KEY_MONTH * (1 + config.log_kms_key + (config.secret_kms_key and config.google_credentials_secret is None))
        + prices.ALARM_MONTH * alarms
        + prices.CUSTOM_METRIC_MONTH
    )
    glue_per_run = hours * prices.GLUE_PYTHON_SHELL_MIN_DPU * prices.GLUE_DPU_HOUR
    nat_fixed = 2 * prices.HOURS_PER_MONTH * (prices.NAT_GATEWAY_HOUR + prices.PUBLIC_IPV4_HOUR)
    return {
        "runs_per_month": runs_per_month,
        "per_run": per_run,
        "fixed_month": fixed,
        "total_month": fixed + per_run * runs_per_month,
        "glue_per_run": glue_per_run,
        "glue_month": glue_per_run * runs_per_month,
        "naive_nat_month": fixed + nat_fixed + per_run * runs_per_month,
    }


def bigquery_lines(config: stage_config.StageConfig, runs_per_month: float) -> list[str]:
    """BigQuery's on-demand scan cost per run, from the source table size the user gives (source_table_gib).

    Not from a dry run: that needs Google credentials, which `make cost` (like synth) runs without.
    """
    if config.source_table_gib is None:
        return ["  BigQuery scans: not estimated; give the source table's size, e.g. "
                "make cost CDK_ARGS=\"-c source_table_gib=500\" (bq show --format=prettyjson TABLE: numBytes)."]
    per_run = config.source_table_gib / 1024 * prices.BIGQUERY_ON_DEMAND_TIB
    lines = [
        f"  BigQuery scans: about {config.source_table_gib:g} GiB a run (the extract reads the whole source table every "
        "run, even when nothing is new),",
        f"  ${per_run:.4f} a run, ${per_run * runs_per_month:.2f} a month at ${prices.BIGQUERY_ON_DEMAND_TIB}/TiB on-demand "
        "(the first 1 TiB a month is free; the INSERTs that read the destination's keys come on top).",
    ]
    if config.source_table_gib * 2**30 > config.max_bytes_billed:
        lines.append(f"  WARNING: that is above max_bytes_billed={config.max_bytes_billed} bytes: BigQuery would refuse "
                     "the extract and every run would fail; raise max_bytes_billed or read a smaller source.")
    return lines


def report(config: stage_config.StageConfig) -> str:
    e = estimate(config)
    size = f"{config.cpu / 1024:g} vCPU, {config.memory_mib} MiB, {config.architecture}, {config.capacity}"
    rows = [
        ("This stack", e["fixed_month"], e["per_run"], e["total_month"]),
        ("Same job on AWS Glue Python shell (1/16 DPU)", prices.SECRET_MONTH, e["glue_per_run"], prices.SECRET_MONTH + e["glue_month"]),
        ("Naive setup: this job behind 2 NAT gateways", e["naive_nat_month"] - e["per_run"] * e["runs_per_month"], e["per_run"], e["naive_nat_month"]),
    ]
    lines = [
        f"Cost estimate for {config.stack_name} ({prices.REGION} list prices as of {prices.AS_OF}, see ops/prices.py)",
        f"  task: {size}; {config.expected_run_minutes} min a run (expected_run_minutes); "
        f"{e['runs_per_month']:.1f} runs a month on {config.schedule}{'' if config.schedule_enabled else ' (paused)'}",
        "",
        f"  {'':46} {'fixed/month':>12} {'per run':>10} {'month':>10}",
    ]
    lines += [f"  {name:46} {fixed:>12.2f} {run:>10.4f} {month:>10.2f}" for name, fixed, run, month in rows]
    lines += ["", *bigquery_lines(config, e["runs_per_month"])]
    lines += [
        "",
        "  Fixed: the Google key secret (none with google_auth=workload_identity), KMS keys (alert topic; logs and secret if configured), alarms, the success metric.",
        "  Not included: CloudWatch Logs ingestion ($0.50/GB), ECR image storage ($0.10/GB-month), data transfer,",
        "  and BigQuery storage. Spot is estimated at the usual 70% discount; the real Spot price varies.",
        "  The Glue row counts compute and the secret only: alerting on Glue would add the same alarms and key.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    stage = argv[0] if argv and "=" not in argv[0] and not argv[0].startswith("-") else None
    overrides = {}
    items = [item for item in argv[1 if stage else 0 :] if item not in ("-c", "--context")]
    for item in items:
        key, sep, value = item.removeprefix("--context=").partition("=")
        if not sep:
            print(f"error: '{item}' is not key=value; usage: python -m ops.cost [STAGE] [-c key=value ...]", file=sys.stderr)
            return 2
        overrides[key] = value
    if stage:
        overrides["stage"] = stage
    try:
        config = stage_config.load({**stage_config.read_cdk_json_context(), **overrides})
    except stage_config.ConfigError as error:
        print(*error.lines(), sep="\n", file=sys.stderr)
        return 2
    print(report(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
