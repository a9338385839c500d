"""No overlapping runs on ECS: skip this run if an older task of the same job on the same keys is still running.

Only on ECS (``ECS_CONTAINER_METADATA_URI_V4`` set). Calls ``ecs:ListTasks`` and, when another
task is found, ``ecs:DescribeTasks`` (to compare start times and shards), both on this task's own
cluster. With a fanned-out run, tasks of the same family run side by side on purpose; two tasks
overlap only if their shards can share a key: shard i of n and shard j of m share keys exactly
when i ≡ j (mod gcd(n, m)) (so the same shard of the same count, and anything against an unsharded
task). A task's shard is read from its container overrides (``contract.SHARD_SET``; none: 0 of 1).

This check is what keeps two runs from loading at the same time. Overlapping runs never lose
rows, but they can write a key twice: each reads the same missing keys, and BigQuery may commit
two concurrent INSERTs. If the check itself fails (metadata endpoint or ECS API
unreachable, permission denied) the run goes ahead with a warning: fail open, because failing
closed would silently skip every scheduled run until someone fixed a permission. So a failed
check while another run is still going can double rows; the warning says so.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
from collections.abc import Mapping
from typing import Any

from etl_job import contract, metrics
from etl_job.logs import fields

log = logging.getLogger(__name__)

METADATA_URI = "ECS_CONTAINER_METADATA_URI_V4"  # set by ECS in every container
METADATA_TIMEOUT_SECONDS = 2
IAM_ACTIONS = ("ecs:ListTasks", "ecs:DescribeTasks")


def older_run_in_progress(env: Mapping[str, str], *, shard: tuple[int, int] = (0, 1)) -> bool:
    """True if another task of this task's family, on keys of this ``shard`` (index, count), runs and started first."""
    uri = env.get(METADATA_URI, "").strip()
    if not uri:
        return False
    try:
        return _check(uri, shard, stage=env.get(contract.STAGE, ""))
    except Exception as exc:  # noqa: BLE001 - fail open, see the module docstring
        log.warning(
            "could not check for an overlapping run; going ahead (if another run is going, keys may be loaded twice)",
            extra=fields(overlap_check="failed", error=f"{type(exc).__name__}: {str(exc)[:300]}",
                         needs_iam_actions=list(IAM_ACTIONS)),
        )
        return False


def _check(metadata_uri: str, shard: tuple[int, int], *, stage: str) -> bool:
    with urllib.request.urlopen(f"{metadata_uri.rstrip('/')}/task", timeout=METADATA_TIMEOUT_SECONDS) as response:
        task = json.load(response)
    cluster, me, family = task["Cluster"], task["TaskARN"], task["Family"]
    ecs = _ecs_client(region=me.split(":")[3])
    running = [
        arn
        for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, family=family, desiredStatus="RUNNING")
        for arn in page["taskArns"]
    ]
    others = [arn for arn in running if arn != me]
    if not others:
        _log_runs(stage, concurrent_runs=1)
        return False
    arns = [me, *others]
    described = {t["taskArn"]: t for start in range(0, len(arns), 100)  # DescribeTasks takes at most 100
                 for t in ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100])["tasks"]}
    others = [arn for arn in others if shards_overlap(shard, task_shard(described.get(arn)))]
    if not others:
        log.info("other shards of this job are running; none on this shard's keys",
                 extra=fields(shard_index=shard[0], shard_count=shard[1]))
        _log_runs(stage, concurrent_runs=1)
        return False
    older = [arn for arn in others if _start_order(described.get(arn), arn) < _start_order(described.get(me), me)]
    if older:
        log.warning(
            "another run of this job is still going; skipping this one",
            extra=fields(task_arn=me, running_task_arns=older, cluster=cluster, family=family,
                         shard_index=shard[0], shard_count=shard[1],
                         **_metric_fields(stage, concurrent_runs=len(older), skipped=True)),
        )
        return True
    log.info("a newer run of this job is starting too; it will skip", extra=fields(other_task_arns=others))
    _log_runs(stage, concurrent_runs=1)
    return False


def shards_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether shard a = (index, count) and shard b can hold the same key (a key hashes to h mod count)."""
    return (a[0] - b[0]) % math.gcd(a[1], b[1]) == 0


def task_shard(described: dict[str, Any] | None) -> tuple[int, int]:
    """A described task's shard from its container overrides; 0 of 1 (all keys) when unset or unreadable."""
    overrides = (described or {}).get("overrides") or {}
    env = {item.get("name"): item.get("value", "")
           for container in overrides.get("containerOverrides") or [] for item in container.get("environment") or []}
    try:
        index, count = int(env.get(contract.SHARD_INDEX, 0)), int(env.get(contract.SHARD_COUNT, 1))
    except ValueError:
        return 0, 1
    return (index, count) if 0 <= index < count else (0, 1)


def _metric_fields(stage: str, *, concurrent_runs: int, skipped: bool) -> dict[str, object]:
    """The fields the stack's metric filters read (etl_job.metrics); the stage is their dimension."""
    return {metrics.DIMENSION_STAGE: stage, metrics.CONCURRENT_RUNS: concurrent_runs, metrics.SKIPPED_RUN: int(skipped)}


def _log_runs(stage: str, *, concurrent_runs: int) -> None:
    log.info("no older run of this job is going; this run goes ahead",
             extra=fields(**_metric_fields(stage, concurrent_runs=concurrent_runs, skipped=False)))


def _start_order(described: dict[str, Any] | None, arn: str) -> tuple[int, float, str]:
    """Sort key: creation time (unknown sorts last), then ARN, so every task reaches the same verdict."""
    created = (described or {}).get("createdAt")
    return (0, created.timestamp(), arn) if created else (1, 0.0, arn)


def _ecs_client(region: str) -> Any:  # boto3 clients are untyped (mypy.ini)
    import boto3
    from botocore.config import Config

    # Bounded: a few quick attempts, never minutes (honours AWS_ENDPOINT_URL_ECS for local tests).
    config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("ecs", region_name=region, config=config)
