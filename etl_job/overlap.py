"""No overlapping runs on ECS: skip this run if an older task of the same job is still running.

Only on ECS (``ECS_CONTAINER_METADATA_URI_V4`` set). Calls ``ecs:ListTasks`` and, when another
task is found, ``ecs:DescribeTasks`` (to compare start times), both on this task's own cluster.

This check is what keeps two runs from loading at the same time. Overlapping runs never lose
rows, but they can write a key twice: each reads the same missing keys, and BigQuery may commit
two concurrent MERGEs that only insert. If the check itself fails (metadata endpoint or ECS API
unreachable, permission denied) the run goes ahead with a warning: fail open, because failing
closed would silently skip every scheduled run until someone fixed a permission. So a failed
check while another run is still going can double rows; the warning says so.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping

from etl_job.logs import fields

log = logging.getLogger(__name__)

METADATA_URI = "ECS_CONTAINER_METADATA_URI_V4"  # set by ECS in every container
METADATA_TIMEOUT_SECONDS = 2
IAM_ACTIONS = ("ecs:ListTasks", "ecs:DescribeTasks")


def older_run_in_progress(env: Mapping[str, str]) -> bool:
    """True if another task of this task's family is running on its cluster and started before it."""
    uri = env.get(METADATA_URI, "").strip()
    if not uri:
        return False
    try:
        return _check(uri)
    except Exception as exc:  # noqa: BLE001 - fail open, see the module docstring
        log.warning(
            "could not check for an overlapping run; going ahead (if another run is going, keys may be loaded twice)",
            extra=fields(overlap_check="failed", error=f"{type(exc).__name__}: {str(exc)[:300]}",
                         needs_iam_actions=list(IAM_ACTIONS)),
        )
        return False


def _check(metadata_uri: str) -> bool:
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
        return False
    described = {t["taskArn"]: t for t in ecs.describe_tasks(cluster=cluster, tasks=[me, *others][:100])["tasks"]}
    older = [arn for arn in others if _start_order(described.get(arn), arn) < _start_order(described.get(me), me)]
    if older:
        log.warning(
            "another run of this job is still going; skipping this one",
            extra=fields(task_arn=me, running_task_arns=older, cluster=cluster, family=family),
        )
        return True
    log.info("a newer run of this job is starting too; it will skip", extra=fields(other_task_arns=others))
    return False


def _start_order(described: dict | None, arn: str) -> tuple:
    """Sort key: creation time (unknown sorts last), then ARN, so every task reaches the same verdict."""
    created = (described or {}).get("createdAt")
    return (0, created.timestamp(), arn) if created else (1, 0.0, arn)


def _ecs_client(region: str):
    import boto3
    from botocore.config import Config

    # Bounded: a few quick attempts, never minutes (honours AWS_ENDPOINT_URL_ECS for local tests).
    config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("ecs", region_name=region, config=config)
