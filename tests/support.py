"""Plain helpers shared by several test modules (fixtures live in the conftest.py files).

What is here is called with arguments inside tests, parametrize lists and other helpers, so it is a
function, not a fixture: the repository's paths, the synthesized templates and what to read from them,
the job's seeded source rows, and the job's logs.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dev.audit_configurations import CONFIGURATIONS
from dev.key_readers import as_list, statements
from etl_job import contract
from stacks import config as stage_config

if TYPE_CHECKING:  # aws_cdk is imported when a test synthesizes: after tests/conftest.py has set up its environment
    from aws_cdk.assertions import Template

ROOT = Path(__file__).resolve().parents[1]
DEMO_SQL = (ROOT / "etl_job" / "transform.sql").read_text()  # the demo rule in the SQL form
CDK = ROOT / "node_modules" / ".bin" / "cdk"

# --- the stack -----------------------------------------------------------------------------------

CDK_JSON_CONTEXT = stage_config.read_cdk_json_context()


def build_config(**overrides: Any) -> stage_config.StageConfig:
    """The config app.py would build from cdk.json plus ``-c key=value`` overrides."""
    return stage_config.load({**CDK_JSON_CONTEXT, **overrides})


@functools.cache
def _synth(overrides: tuple[tuple[str, Any], ...]) -> Template:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import build

    app = cdk.App(context={**CDK_JSON_CONTEXT, **dict(overrides)})
    stack = build(app, build_config(**dict(overrides)))  # as app.py does: cdk-nag runs in from_stack
    return Template.from_stack(stack)


def synth(**overrides: Any) -> Template:
    """The template of the stack for cdk.json's defaults plus ``overrides``; cached per configuration."""
    return _synth(tuple(sorted(overrides.items())))


def audited_template(name: str) -> dict[str, Any]:
    """The template (as JSON) of one of the configurations the audit checks, by name (dev, prod, dev-wif, ...)."""
    return synth(**CONFIGURATIONS[name]).to_json()


def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the CDK CLI with no AWS credentials, no network checks and its homes under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        CDK_DISABLE_VERSION_CHECK="1",
        npm_config_update_notifier="false",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_HOME=str(tmp_path / "cdk-home"),
        HOME=str(tmp_path / "home"),  # no ~/.aws: prove synth needs no credentials
    )
    return env


@dataclasses.dataclass(frozen=True)
class CliSynth:
    """The dev stage synthesized by the pinned CDK CLI: its cloud assembly and what the CLI printed."""

    assembly: Path
    output: str


def only(template: Template, resource_type: str) -> tuple[str, dict]:
    """The logical id and resource of the one resource of ``resource_type``."""
    resources = template.find_resources(resource_type)
    assert len(resources) == 1, f"expected one {resource_type}, found {list(resources)}"
    return next(iter(resources.items()))


def logical_id(template: Template, resource_type: str) -> str:
    return only(template, resource_type)[0]


def container(template: Template) -> dict:
    """The job's container definition."""
    definitions = only(template, "AWS::ECS::TaskDefinition")[1]["Properties"]["ContainerDefinitions"]
    assert len(definitions) == 1
    return definitions[0]


def policy_statements(template: Template, role_logical_id: str) -> list[dict]:
    """Every statement of the AWS::IAM::Policy resources attached to the role."""
    statements = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def schedule_rule(template: Template) -> tuple[str, dict]:
    """The logical id and resource of the EventBridge rule that holds the schedule."""
    rules = template.find_resources("AWS::Events::Rule").items()
    (found,) = [(k, r) for k, r in rules if "ScheduleExpression" in r["Properties"]]
    return found


def resources_of(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    """The resources of a template (as JSON) whose type is one of ``types``, by logical id."""
    return {k: r for k, r in template["Resources"].items() if r["Type"] in types}


def role_of(template: dict[str, Any], service: str) -> list[str]:
    """The roles that ``service`` (e.g. events.amazonaws.com) may assume."""
    return [
        role_id
        for role_id, role in resources_of(template, "AWS::IAM::Role").items()
        for s in statements(role["Properties"]["AssumeRolePolicyDocument"])
        if service in as_list(s.get("Principal", {}).get("Service", []))
    ]


def task_definition(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The logical id and properties of the one task definition of a template (as JSON)."""
    ((found, definition),) = resources_of(template, "AWS::ECS::TaskDefinition").items()
    return found, definition["Properties"]


# --- a fake key -------------------------------------------------------------------------------------

# A fake service-account key, built here and never committed: the marker is its distinctive content,
# found nowhere else.
KEY_MARKER = "AuditFakeKeyMaterial7f3a9c0e"
FAKE_KEY = json.dumps(
    {
        "type": "service_account",
        "project_id": "audit-fake-project",
        "private_key_id": f"{KEY_MARKER}-id",
        "private_key": f"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAAS{KEY_MARKER}\n-----END PRIVATE KEY-----\n",
        "client_email": "etl@audit-fake-project.iam.gserviceaccount.com",
    }
)
# Where a tutorial tells you to save the key, and a name of your own choosing.
KEY_FILES = ("google_credentials.json", "my-sa-key.json")

# --- the job ---------------------------------------------------------------------------------------

TRANSFORMS = "tests.etl_job.transforms"  # the module of alternative transforms the tests point ETL_TRANSFORM at
SLOW = f"{TRANSFORMS}:slow"
# The job's call limits scaled down from a minute to seconds (Job.run's settings), for a test of an endpoint that does not
# answer: the code path is the one a minute takes.
FAST_CALL_LIMITS = {"etl_job.bigquery_io.REQUEST_TIMEOUT_SECONDS": 1.0, "etl_job.bigquery_io.RETRY_DEADLINE_SECONDS": 3.0}
CLOSED_URL = "http://127.0.0.1:9"  # nothing listens here: a request to it is refused at once


def source_schema() -> list:
    """The seeded source table's schema: id, name, score, created_at."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("score", "NUMERIC"),
        bigquery.SchemaField("created_at", "TIMESTAMP"),
    ]


def source_row(i: int, doe_every: int = 3) -> dict:
    """Row ``i`` of the seeded source table: every ``doe_every``-th name holds "Doe"."""
    return {
        "id": i,
        "name": f"John Doe {i}" if i % doe_every == 0 else f"Jane Roe {i}",
        "score": f"{i}.25",
        "created_at": f"2024-01-{1 + i % 28:02d}T05:00:00.123456Z",
    }


def expected_rows(n: int, *, with_created_at: bool = False) -> list[dict]:
    """What one clean run writes for a source of n rows: id, name, score (and created_at), no lineage columns."""
    rows = []
    for i in range(1, n + 1):
        row = source_row(i)
        expected = {"id": i, "name": row["name"].replace("Doe", "Das"), "score": decimal.Decimal(row["score"])}
        if with_created_at:
            expected["created_at"] = datetime.datetime.fromisoformat(row["created_at"])
        rows.append(expected)
    return rows


def business_columns(rows: list[dict]) -> list[dict]:
    """The rows without their lineage columns and created_at."""
    return [{"id": r["id"], "name": r["name"], "score": r["score"]} for r in rows]


def transform_module(directory: Path, name: str, source: str) -> dict[str, str]:
    """The job's environment for a transform module written for one test (its own OUTPUT_COLUMNS need a module of
    their own): ``source`` saved as ``<directory>/<name>.py``, its ``transform`` the job's transform."""
    (directory / f"{name}.py").write_text(source)
    return {"PYTHONPATH": str(directory), "ETL_TRANSFORM": f"{name}:transform"}


def log_lines(stderr: str) -> list[dict]:
    """The job's JSON log lines (every stderr line must be one)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def log_messages(done: subprocess.CompletedProcess) -> list[str]:
    """The messages of a finished job's log lines, in order."""
    return [line["message"] for line in log_lines(done.stderr)]


def emf_lines(stdout: str) -> list[dict]:
    """The job's metric lines (CloudWatch embedded metric format)."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]


def assert_no_traceback(process: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in process.stderr and "Traceback" not in process.stdout


def kill_after_first_batch(process: subprocess.Popen) -> None:
    """SIGKILL a started job once it has done a batch: no cleanup at all, possibly mid-load."""
    for line in process.stderr:
        if '"batch done"' in line:
            process.kill()
            break
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def sigterm_after_batches(process: subprocess.Popen, batches: int) -> str:
    """SIGTERM a started job once it has logged ``batches`` "batch done" lines; return all it wrote to stderr."""
    stderr, done = [], 0
    for line in process.stderr:
        stderr.append(line)
        done += '"batch done"' in line
        if done == batches:
            process.send_signal(signal.SIGTERM)
            break
    _, rest = process.communicate(timeout=60)
    return "".join(stderr) + rest


# The two settings the job cannot run without, for tests of its configuration.
BASE_SETTINGS = {contract.SOURCE_TABLE: "my-project.raw.customers", contract.DESTINATION_TABLE: "my-project.clean.customers"}
