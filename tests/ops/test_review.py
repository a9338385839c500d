"""The committed review/ templates match the code, and `cdk diff` against them works offline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.review import REFRESH_COMMAND, STAGES, normalize, review_path
from tests.support import CDK, ROOT, CliSynth, offline_env, synth


@pytest.mark.parametrize("stage", STAGES)
def test_committed_review_template_is_up_to_date(stage: str) -> None:
    current = normalize(synth(stage=stage).to_json())
    committed = review_path(stage).read_text() if review_path(stage).exists() else ""
    assert current == committed, (
        f"{review_path(stage).relative_to(ROOT)} is out of date with the stack: run `{REFRESH_COMMAND}` "
        "and commit the result, so reviewers see this change"
    )


def test_normalizing_hides_only_the_asset_hash() -> None:
    template = {"Image": {"Fn::Sub": "repo:" + "a" * 64}, "Cpu": "256"}
    changed_job = {"Image": {"Fn::Sub": "repo:" + "b" * 64}, "Cpu": "256"}
    assert normalize(template) == normalize(changed_job)
    assert normalize(template) != normalize({**template, "Cpu": "512"})


def test_cdk_diff_against_the_committed_template_shows_a_real_change_offline(cli_synth: CliSynth, tmp_path: Path) -> None:
    out = tmp_path / "assembly"
    shutil.copytree(cli_synth.assembly, out)  # the session's assembly stays as synthesized
    template = out / "EtlPipeline-dev.template.json"
    template.write_text(normalize(json.loads(template.read_text())))
    # A real change between the code and the committed template: the task's memory.
    committed = json.loads(review_path("dev").read_text())
    (definition,) = [r for r in committed["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    definition["Properties"]["Memory"] = "1024"
    (tmp_path / "committed.json").write_text(json.dumps(committed))
    diff = subprocess.run(
        [str(CDK), "diff", "--app", str(out), "--template", str(tmp_path / "committed.json"), "--fail", "EtlPipeline-dev"],
        cwd=ROOT, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    output = diff.stdout + diff.stderr
    assert diff.returncode == 1, output
    assert "AWS::ECS::TaskDefinition" in output and "Memory" in output
    assert "Unable to resolve AWS account" not in output
