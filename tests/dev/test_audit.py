"""`make audit`, run as a command (not imported): on a stack with injected defects it fails, one line per
finding, and its report names each with rule, resource and reason next to the accepted findings' reasons.

One cloud assembly and one audit run serve every test here (about half a minute); `make audit` itself,
the last step of `make test`, is the clean run over every configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs

from app import build
from stacks import config as stage_config
from stacks.nag import skip_checkov

ROOT = Path(__file__).resolve().parents[2]
# `latest` (DL3007), unpinned apt packages (DL3008) and no --no-install-recommends (DL3015); no USER or
# HEALTHCHECK for checkov.
BAD_DOCKERFILE = "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n"


def audit(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dev.audit", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev stack's cloud assembly as app.py synthesizes it (cdk-nag on), with three defects added: a queue
    nothing acknowledges, a resource with a property CloudFormation does not know, a checkov skip of no check."""
    outdir = tmp_path_factory.mktemp("assembly")
    context = stage_config.read_cdk_json_context()
    app = cdk.App(outdir=str(outdir), context=context)
    stack = build(app, stage_config.load(context))
    skip_checkov(sqs.Queue(stack, "Injected"), "CKV_AWS_0", "names no check")
    cdk.CfnResource(stack, "Unknown", type="AWS::SQS::Queue", properties={"NoSuchProperty": 1})
    with pytest.raises(RuntimeError, match="ValidationFailed"):  # cdk-nag stops the synth after writing its report
        app.synth()
    return outdir


@pytest.fixture(scope="module")
def audited(assembly: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("audit")
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(BAD_DOCKERFILE)
    return audit("--assembly", assembly, "--dockerfile", dockerfile, "--out", out), out


# What each scanner must report about the injected defects, as the one-line summaries say it.
FAILURES = (
    ": AwsSolutions-SQS4 on Injected: The SQS queue does not require requests to use SSL",
    ": E3002 on Unknown: Additional properties are not allowed ('NoSuchProperty' was unexpected)",
    ": CKV_AWS_27 on Unknown (AWS::SQS::Queue): Ensure all data stored in the SQS queue is encrypted",
    ": CKV_AWS_0 on Injected (AWS::SQS::Queue): this checkov skip matches no check",
    "Dockerfile: CKV_DOCKER_7 on FROM: Ensure the base image uses a non latest version tag",
    "Dockerfile: DL3007 on line 1 (warning): Using latest",
    "Dockerfile: DL3008 on line 2 (warning): Pin versions in apt get install",
)


def test_every_injected_defect_fails_the_audit_with_one_line(audited: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = audited
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("FAIL: ")
    for failure in FAILURES:
        assert sum(failure in line for line in lines) == 1, (failure, result.stdout)


def test_the_report_names_failures_and_keeps_accepted_findings_with_their_reasons(
    audited: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = audited
    report = (out / "report.md").read_text()
    assert "**Result: FAIL.**" in report
    failures = report.split("## Failures")[1].split("\n## ")[0]
    assert all(failure in failures for failure in FAILURES)
    printed = [line for line in result.stdout.splitlines() if line.startswith("       ")]
    assert len(printed) == failures.count("\n- ")  # every failure printed, each on one line
    accepted = report.split("## Accepted findings and their reasons")[1].split("\n## ")[0]
    assert "| AwsSolutions-ECS4 | `Cluster` | Container Insights is billed as custom metrics" in accepted
    assert "| CKV_AWS_65 | `Cluster (AWS::ECS::Cluster)` | Container Insights: see the cdk-nag" in accepted
    readers = report.split("## Who can read the key")[1].split("\n## ")[0]
    assert "the execution role `Job/TaskDefinition/ExecutionRole`: ECS reads the secret" in readers
    lives = report.split("## Where the Google credential lives")[1].split("\n## ")[0]
    assert "Secrets Manager secret `Job/GoogleCredentials`" in lives and "lives until it is deleted in GCP" in lives


def test_the_scanners_own_outputs_sit_next_to_the_report(
    assembly: Path, audited: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = audited
    sarif = {tool: json.loads((out / f"{tool}.sarif").read_text()) for tool in ("checkov", "hadolint")}
    assert {s["version"] for s in sarif.values()} == {"2.1.0"}
    assert "CKV_AWS_27" in {r["ruleId"] for r in sarif["checkov"]["runs"][0]["results"]}
    assert {"DL3007", "DL3008"} <= {r["ruleId"] for r in sarif["hadolint"]["runs"][0]["results"]}
    assert "E3002" in {m["Rule"]["Id"] for m in json.loads((out / "cfn-lint.json").read_text())}
    assert json.loads((out / "checkov.json").read_text())
    nag = json.loads((assembly / "validation-report.json").read_text())
    assert "AwsSolutions-SQS4" in {v["ruleName"] for p in nag["pluginReports"] for v in p["violations"]}


def test_a_folder_without_a_template_is_a_one_line_error(tmp_path: Path) -> None:
    result = audit("--assembly", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"audit: --assembly {tmp_path} holds no *.template.json: "
                                     "give a folder `cdk synth -o DIR` wrote")


def test_the_report_says_what_each_role_may_do_and_what_encrypts_what(audited: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    report = (audited[1] / "report.md").read_text()
    section = report.split("## Who can do what")[1].split("\n## ")[0]
    execution_role = section.split("#### Role `Job/TaskDefinition/ExecutionRole`")[1].split("####")[0]
    assert "Assumed by: Service ecs-tasks.amazonaws.com" in execution_role
    assert "**Allow** `secretsmanager:DescribeSecret`, `secretsmanager:GetSecretValue` on `<Job/GoogleCredentials>`" in execution_role
    assert "#### Resource policy of `Job/GoogleCredentials/Policy` (AWS::SecretsManager::ResourcePolicy)" in section
    assert "- Secret `Job/GoogleCredentials`: the template holds only a placeholder value" in section
