"""No key material where it does not belong: not in the template or its outputs, not in the staged
image asset, even with key files dropped into etl_job/ (the image built beside key files:
tests/integration/test_image.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import aws_cdk as cdk
import pytest

from app import build
from dev.audit_configurations import CONFIGURATIONS
from etl_job import contract
from stacks.job import ETL_JOB_DIR, SECRET_PLACEHOLDER
from tests.support import CDK_JSON_CONTEXT, FAKE_KEY, KEY_FILES, KEY_MARKER, build_config, synth

KEY_MATERIAL = re.compile(rf"{KEY_MARKER}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:")


@pytest.fixture
def key_files_in_etl_job() -> Iterator[list[Path]]:
    """Drop fake key files into etl_job/ for one test; always removed afterwards."""
    paths = [ETL_JOB_DIR / name for name in KEY_FILES]
    existing = [p.name for p in paths if p.exists()]
    if existing:
        pytest.skip(f"etl_job/ already holds {', '.join(existing)}: move it out of the repository (a key never lives here)")
    try:
        for path in paths:
            path.write_text(FAKE_KEY)
        yield paths
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def key_material_in(files: list[Path]) -> list[str]:
    return [str(p) for p in files if KEY_MATERIAL.search(p.read_text(errors="replace"))]


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_template_holds_no_key_and_the_secret_only_its_placeholder(name: str) -> None:
    template = synth(**CONFIGURATIONS[name]).to_json()
    text = json.dumps(template)
    assert not KEY_MATERIAL.search(text)
    assert "private_key" not in text
    for secret in [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::SecretsManager::Secret"]:
        assert secret.get("SecretString") == SECRET_PLACEHOLDER
        assert "GenerateSecretString" not in secret
    (definition,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    (container,) = definition["ContainerDefinitions"]
    mode = CONFIGURATIONS[name].get("google_auth", "key")
    assert not {e["Name"] for e in container["Environment"]} & set(contract.STACK_SECRETS)
    assert {s["Name"] for s in container.get("Secrets", [])} == set(contract.AUTH_SECRETS[mode])


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_outputs_name_the_secret_but_never_read_its_value(name: str) -> None:
    template = synth(**CONFIGURATIONS[name]).to_json()
    outputs = json.dumps(template.get("Outputs", {}))
    assert "resolve:secretsmanager" not in outputs  # a dynamic reference would print the value
    assert "SecretString" not in outputs and SECRET_PLACEHOLDER not in outputs
    secret_ids = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"]
    for secret_id in secret_ids:  # only by Ref, which is the ARN
        assert outputs.count(f'"{secret_id}"') == outputs.count(f'{{"Ref": "{secret_id}"}}')


def test_key_files_in_etl_job_stay_out_of_the_assembly(
    key_files_in_etl_job: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key in the shell that runs synth must not reach the template either.
    monkeypatch.setenv(contract.GOOGLE_CREDENTIALS_JSON, FAKE_KEY)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_files_in_etl_job[0]))
    app = cdk.App(outdir=str(tmp_path), context=CDK_JSON_CONTEXT)
    build(app, build_config())
    app.synth()

    (asset,) = [p for p in tmp_path.glob("asset.*") if (p / "Dockerfile").exists()]
    staged = {p.relative_to(asset).as_posix() for p in files_under(asset)}
    assert "__main__.py" in staged and "Dockerfile" in staged  # the asset really is etl_job/
    assert not staged & set(KEY_FILES)
    assert not [f for f in staged if f.endswith(".json")]
    assert key_material_in(files_under(tmp_path)) == []  # template, manifest, tree.json, every asset
    # What the image built from it holds: tests/integration/test_image.py builds it with keys beside the job.


def test_the_check_sees_a_key_that_does_reach_the_assembly(tmp_path: Path) -> None:
    """The helpers above find a key when one is there (so the test above can fail)."""
    (tmp_path / "asset.abc" / "app").mkdir(parents=True)
    (tmp_path / "asset.abc" / "app" / "google_credentials.json").write_text(FAKE_KEY)
    (tmp_path / "asset.abc" / "job.py").write_text("print('hi')\n")
    assert key_material_in(files_under(tmp_path)) == [str(tmp_path / "asset.abc" / "app" / "google_credentials.json")]
