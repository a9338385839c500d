"""The pinned CDK CLI synthesizes offline, deterministically, and rejects bad config without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import CDK, ROOT, CliSynth, offline_env


def cdk(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CDK), *args], cwd=ROOT, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300
    )


def test_cli_synth_is_offline_quiet_and_byte_identical(cli_synth: CliSynth, tmp_path: Path) -> None:
    second = cdk(tmp_path, "synth", "--no-lookups", "--quiet", "-o", str(tmp_path / "two"))
    assert second.returncode == 0, second.stderr
    one = (cli_synth.assembly / "EtlPipeline-dev.template.json").read_bytes()
    assert one == (tmp_path / "two" / "EtlPipeline-dev.template.json").read_bytes()
    assert json.loads(one)["Resources"]
    for noise in ("NOTICES", "newer version", "telemetry"):
        assert noise not in cli_synth.output

    # `python app.py` without the CLI builds the same template: it reads cdk.json's flags too.
    env = offline_env(tmp_path)
    env["CDK_OUTDIR"] = str(tmp_path / "direct")
    direct = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert direct.returncode == 0, direct.stderr
    assert (tmp_path / "direct" / "EtlPipeline-dev.template.json").read_bytes() == one


@pytest.mark.skipif(not CDK.exists(), reason="run through `make test`, which installs the pinned CDK CLI")
def test_cli_rejects_a_bad_value_with_a_short_message(tmp_path: Path) -> None:
    result = cdk(tmp_path, "synth", "--no-lookups", "--quiet", "-c", "cpu=300", "-o", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "config key 'cpu': '300' is not valid" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_app_without_the_cli_reads_cdk_json_and_rejects_typos(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    env["CDK_OUTDIR"] = str(tmp_path / "out")
    env["CDK_CONTEXT_JSON"] = json.dumps({"memry_mib": "1024"})
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown config key 'memry_mib' in the CDK context (-c or cdk.json); did you mean 'memory_mib'?"

    env["CDK_CONTEXT_JSON"] = json.dumps({"stage": "prod"})
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    template = json.loads((tmp_path / "out" / "EtlPipeline-prod.template.json").read_text())
    (definition,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    assert definition["Properties"]["Cpu"] == "1024"


def test_app_names_every_bad_value_on_a_line_of_its_own(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    env["CDK_OUTDIR"] = str(tmp_path / "out")
    env["CDK_CONTEXT_JSON"] = json.dumps({"cpu": "lots", "batch_size": "0", "stage": "prod"})
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert [line.split(":")[:2] for line in result.stderr.strip().splitlines()] == [
        ["error", " config key 'batch_size'"], ["error", " config key 'cpu'"]]
    assert "'0' is not valid; expected a whole number from 1 to 100000" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout

@pytest.mark.skipif(not CDK.exists(), reason="run through `make test`, which installs the pinned CDK CLI")
def test_cdk_works_from_the_repo_root_without_the_venv_on_path(tmp_path: Path) -> None:
    """`cdk ls` (and so diff, deploy, bootstrap) as a platform engineer types it: no venv activated."""
    env = offline_env(tmp_path)
    env["PATH"] = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    result = subprocess.run([str(CDK), "ls", "--no-lookups"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EtlPipeline-dev"]


def test_the_cdk_app_command_says_what_to_do_when_the_venv_is_missing(tmp_path: Path) -> None:
    app = json.loads((ROOT / "cdk.json").read_text())["app"]
    result = subprocess.run(app, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: .venv/bin/python is missing: run make setup in this folder first (cdk runs the app in the project venv)"
    )
