"""The audit gates: cdk-nag (in the app, on every synth), cfn-lint, checkov and hadolint.

`python -m dev.audit` (`make audit`) synthesizes each configuration of dev/audit_configurations.py offline
(the pinned CDK CLI with --no-lookups; checkov with --skip-download), keeps each scanner's own machine output
in cdk.out/audit/ and writes report.md for auditors from it. It prints one line per unacknowledged finding
and exits 1 if there is any, 2 when a tool or an input is missing. `--assembly DIR` audits a cloud assembly
already synthesized (as `cdk synth -o DIR` writes it) instead of the configurations.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from dev.audit_configurations import CONFIGURATIONS
from dev.key_readers import as_list, credential_lives, key_readers
from dev.permissions import who_can_do_what

ROOT = Path(__file__).resolve().parent.parent
CDK = ROOT / "node_modules" / ".bin" / "cdk"
VENV_BIN = Path(sys.executable).parent
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


class AuditError(Exception):
    """The audit cannot run: a tool or an input is missing or broken; the message says what to do."""


@dataclass(frozen=True)
class Finding:
    """What a scanner reported (or was told to accept): where, which rule, on what, and its message or reason."""

    where: str
    rule: str
    resource: str
    text: str

    def line(self) -> str:
        return f"{self.where}: {self.rule} on {self.resource}: {self.text}"


@dataclass
class Gate:
    name: str
    version: str
    failures: list[Finding] = field(default_factory=list)
    accepted: list[Finding] = field(default_factory=list)
    summary: str = ""


@dataclass(frozen=True)
class Assembly:
    """One configuration's cloud assembly: its template, cdk-nag's validation report and the construct paths."""

    name: str
    context: dict[str, str]
    outdir: Path
    synth_error: str = ""

    @functools.cached_property
    def template_path(self) -> Path | None:
        return next(iter(sorted(self.outdir.glob("*.template.json"))), None)

    @functools.cached_property
    def template(self) -> dict[str, Any]:
        assert self.template_path is not None
        return dict(json.loads(self.template_path.read_text()))

    @functools.cached_property
    def names(self) -> dict[str, str]:
        """Logical id -> the construct path a reader recognises (Job/TaskDefinition/TaskRole)."""
        names: dict[str, str] = {}
        for file in self.outdir.glob("*.metadata.json"):
            for path, entries in json.loads(file.read_text()).items():
                names |= {e["data"]: short_path(path) for e in entries if e["type"] == "aws:cdk:logicalId"}
        return names

    def owns(self, file: str) -> bool:
        return self.template_path is not None and (ROOT / file).resolve() == self.template_path.resolve()


def short_path(construct_path: str) -> str:
    parts = construct_path.strip("/").split("/")[1:]  # drop the stack name
    return "/".join(parts[:-1] if parts and parts[-1] == "Resource" else parts) or "(the stack)"


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when it is inside."""
    path = (ROOT / path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def option(flag: str, values: list[Any]) -> list[Any]:
    """``flag`` before each value: -f a -f b."""
    return [item for value in values for item in (flag, value)]


def run(args: list[str | Path], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", CDK_DISABLE_VERSION_CHECK="1",
               npm_config_update_notifier="false", JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    env.setdefault("CDK_HOME", str(ROOT / ".cdk-home"))
    try:
        return subprocess.run([str(a) for a in args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AuditError(f"{Path(args[0]).name} did not finish within {timeout} s") from None


def machine_output(text: str, tool: str, result: subprocess.CompletedProcess[str]) -> Any:
    """A scanner's JSON or SARIF; when there is none, the scanner did not run and the audit cannot go on."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise AuditError(f"{tool} could not run (exit {result.returncode}): {result.stderr.strip()[-500:]}") from None


def synthesize(name: str, context: dict[str, str], out: Path) -> Assembly:
    outdir = out / f"synth-{name}"
    shutil.rmtree(outdir, ignore_errors=True)  # stale asset folders would otherwise pile up
    result = run([CDK, "synth", "--no-lookups", "--quiet", "-o", outdir, *option("-c", [f"{k}={v}" for k, v in context.items()])])
    tail = " / ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
    return Assembly(name, context, outdir, tail if result.returncode else "")


def nag_gate(assemblies: list[Assembly]) -> Gate:
    """cdk-nag's violations and acknowledged findings (with their reasons), from each synth's validation-report.json."""
    gate = Gate("synth validation", f"cdk-nag {metadata.version('cdk-nag')} AwsSolutions + the CDK's own rules")
    for assembly in assemblies:
        report = assembly.outdir / "validation-report.json"
        if not report.exists():
            why = assembly.synth_error or "no validation-report.json: cdk-nag did not run"
            gate.failures.append(Finding(assembly.name, "synth", "(the app)", why))
            continue
        for plugin in json.loads(report.read_text())["pluginReports"]:
            gate.failures += nag_findings(assembly.name, plugin.get("violations", []))
            gate.accepted += nag_findings(assembly.name, plugin.get("suppressedViolations", []))
        if assembly.synth_error and not any(f.where == assembly.name for f in gate.failures):
            gate.failures.append(Finding(assembly.name, "synth", "(the app)", assembly.synth_error))
    gate.summary = f"{len(gate.failures)} findings, {len(set(map(row, gate.accepted)))} acknowledged with a reason"
    return gate


def nag_findings(name: str, violations: list[dict[str, Any]]) -> list[Finding]:
    return [
        Finding(name, v.get("acknowledgedId", v["ruleName"]).removeprefix("AwsSolutions::"), short_path(c["constructPath"]),
                v.get("reason") or v["description"].split(". ")[0][:200])
        for v in violations
        for c in v["violatingConstructs"]
    ]


def cfn_lint_gate(assemblies: list[Assembly], out: Path) -> Gate:
    gate = Gate("cfn-lint", f"cfn-lint {metadata.version('cfn-lint')}")
    templates = {a.template_path: a for a in assemblies if a.template_path is not None}
    if not templates:  # cfn-lint with no file would wait for a template on stdin
        gate.summary = "no template: every synth failed"
        return gate
    result = run([VENV_BIN / "cfn-lint", "--format", "json", "--", *templates])
    (out / "cfn-lint.json").write_text(result.stdout)
    for match in machine_output(result.stdout or "[]", "cfn-lint", result):
        (assembly,) = [a for a in templates.values() if a.owns(match["Filename"])]
        path = match["Location"].get("Path") or []
        resource = assembly.names.get(path[1], path[1]) if path[:1] == ["Resources"] else "/".join(map(str, path))
        gate.failures.append(Finding(assembly.name, match["Rule"]["Id"], resource, match["Message"]))
    for assembly in templates.values():
        for logical_id, resource in assembly.template["Resources"].items():
            for rule in resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", []):
                gate.accepted.append(Finding(assembly.name, rule, logical_id, "ignored in the template's Metadata, no reason"))
    gate.summary = f"{len(gate.failures)} errors or warnings in {len(templates)} templates, {len(gate.accepted)} rules ignored"
    return gate


def checkov_gate(assemblies: list[Assembly], dockerfile: Path, out: Path) -> Gate:
    """checkov's JSON for the findings and skips (its SARIF, written by the same run, is kept for auditors)."""
    files = [a.template_path for a in assemblies if a.template_path] + [dockerfile]
    json_file, sarif_file = out / "results_json.json", out / "results_sarif.sarif"  # checkov's own names
    for stale in (json_file, sarif_file):
        stale.unlink(missing_ok=True)
    result = run([CHECKOV, "--config-file", ROOT / ".checkov.yaml", "--skip-download", *option("-f", files),
                  "-o", "json", "-o", "sarif", "--output-file-path", out])
    reports = as_list(machine_output(json_file.read_text() if json_file.exists() else "", "checkov", result))
    json_file.replace(out / "checkov.json")
    sarif_file.replace(out / "checkov.sarif")
    gate = Gate("checkov", f"checkov {reports[0]['summary']['checkov_version']}")
    for report in reports:
        if report["summary"].get("parsing_errors"):
            text = f"{report['summary']['parsing_errors']} files could not be parsed"
            gate.failures.append(Finding(report["check_type"], "parsing", "(files)", text))
        gate.failures += [checkov_finding(assemblies, c, c["check_name"]) for c in report["results"]["failed_checks"]]
        gate.accepted += [checkov_finding(assemblies, c, c["check_result"].get("suppress_comment", ""))
                          for c in report["results"]["skipped_checks"]]
    gate.failures += unused_checkov_skips(assemblies, gate.accepted)
    passed = sum(r["summary"]["passed"] for r in reports)
    gate.summary = f"{passed} passed, {len(gate.failures)} failed, {len(gate.accepted)} skipped per resource"
    return gate


def checkov_finding(assemblies: list[Assembly], check: dict[str, Any], text: str) -> Finding:
    """A checkov result named as a reader knows it: configuration, check, construct path (resource type)."""
    owner = [a for a in assemblies if a.owns(check["file_abs_path"])]
    if not owner:  # the Dockerfile: its resource is the file's path, then the instruction
        instruction = check["resource"].removeprefix(check["file_abs_path"]).lstrip(".") or "(the file)"
        return Finding(shown(Path(check["file_abs_path"])), check["check_id"], instruction, text)
    kind, _, logical_id = check["resource"].partition(".")
    return Finding(owner[0].name, check["check_id"], f"{owner[0].names.get(logical_id, logical_id)} ({kind})", text)


def unused_checkov_skips(assemblies: list[Assembly], skipped: list[Finding]) -> list[Finding]:
    """A skip that matches no check (a typo, a renamed check) hides nothing today and misleads the reader: a failure."""
    used = {(f.where, f.rule, f.resource) for f in skipped}
    unused = []
    for assembly in [a for a in assemblies if a.template_path]:
        names = assembly.names
        for logical_id, resource in assembly.template["Resources"].items():
            where = f"{names.get(logical_id, logical_id)} ({resource['Type']})"
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                if (assembly.name, skip["id"], where) not in used:
                    unused.append(Finding(assembly.name, skip["id"], where, "this checkov skip matches no check"))
    return unused


def hadolint_gate(dockerfile: Path, out: Path) -> Gate:
    """hadolint's SARIF: every result fails; `# hadolint ignore=` comments are listed as accepted."""
    result = run([VENV_BIN / "hadolint", "--format", "sarif", dockerfile])
    (out / "hadolint.sarif").write_text(result.stdout)
    (sarif_run,) = machine_output(result.stdout, "hadolint", result)["runs"]
    gate = Gate("hadolint", f"hadolint {sarif_run['tool']['driver']['version']}")
    where = shown(dockerfile)
    for r in sarif_run["results"]:
        line = r["locations"][0]["physicalLocation"]["region"]["startLine"]
        gate.failures.append(Finding(where, r["ruleId"], f"line {line} ({r['level']})", r["message"]["text"]))
    for number, text in enumerate(dockerfile.read_text().splitlines(), 1):
        if match := re.search(r"hadolint ignore=(\S+)", text):
            gate.accepted.append(Finding(where, match[1], f"line {number}", text.strip()))
    gate.summary = f"{len(gate.failures)} findings in {where}, {len(gate.accepted)} rules ignored"
    return gate


# --- the report --------------------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(finding: Finding) -> tuple[str, str, str]:
    return finding.rule, finding.resource, finding.text


def git_revision() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{head}{' with uncommitted changes' if dirty else ''}" if head else "unknown"


def summary_lines(gates: list[Gate], seconds: float) -> list[str]:
    passed = all(not g.failures for g in gates)
    lines = [
        "# Audit report",
        "",
        f"Generated by `make audit` (dev/audit.py) at {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"from commit {git_revision()}, in {seconds:.0f} s.",
        "",
        f"**Result: {'PASS' if passed else 'FAIL'}.** Every gate must report nothing; each accepted finding is "
        "listed below with the reason written next to its resource in `stacks/`.",
        "",
        "| Gate | Version | Result | Summary |",
        "|---|---|---|---|",
        *[f"| {g.name} | {cell(g.version)} | {'FAIL' if g.failures else 'pass'} | {cell(g.summary)} |" for g in gates],
    ]
    failures = [f"- {g.name}: {cell(f.line())}" for g in gates for f in g.failures]
    return lines + (["", "## Failures", "", *failures] if failures else [])


def configuration_lines(assemblies: list[Assembly]) -> list[str]:
    lines = ["", "## Configurations checked", "",
             "Each is synthesized by the pinned CDK CLI (`cdk synth --no-lookups -c KEY=VALUE ...`) over cdk.json's values.",
             "", "| Name | Context overrides | Template |", "|---|---|---|"]
    for a in assemblies:
        template = f"`{shown(a.template_path)}`" if a.template_path else "synth failed"
        lines.append(f"| {a.name} | {cell(' '.join(f'{k}={v}' for k, v in a.context.items()))} | {template} |")
    return lines


def accepted_lines(gates: list[Gate]) -> list[str]:
    """Each gate's accepted findings, one row per rule, resource and reason, with the configurations it applies to."""
    lines = ["", "## Accepted findings and their reasons"]
    for gate in gates:
        merged: dict[tuple[str, str, str], set[str]] = {}
        for finding in gate.accepted:
            merged.setdefault(row(finding), set()).add(finding.where)
        lines += ["", f"### {gate.name}", ""]
        if not merged:
            lines.append("None: every finding fails the audit.")
            continue
        lines += ["| Rule | Resource | Reason | Configurations |", "|---|---|---|---|"]
        lines += [f"| {cell(rule)} | `{resource}` | {cell(why)} | {', '.join(sorted(where))} |"
                  for (rule, resource, why), where in sorted(merged.items())]
    checkov_yaml = (ROOT / ".checkov.yaml").read_text().rstrip()
    return lines + ["", "checkov's own settings (`.checkov.yaml`; a check skipped here would be skipped everywhere):",
                    "", "```yaml", checkov_yaml, "```"]


def credential_sections(assemblies: list[Assembly]) -> list[str]:
    readable = [(a.name, a.template, a.names) for a in assemblies if a.template_path]
    lines = ["", "## Who can read the key", "",
             "Every principal and every route to the Google key's value, per configuration (dev/key_readers.py)."]
    for name, template, names in readable:
        lines += ["", f"### Configuration `{name}`", "", *key_readers(template, names)]
    lines += ["", "## Where the Google credential lives", "",
              "Which Google credential the job holds, where it lives and for how long, per configuration."]
    for name, template, names in readable:
        lines += ["", f"### Configuration `{name}`", "", *credential_lives(template, names)]
    return lines


def permission_sections(assemblies: list[Assembly]) -> list[str]:
    lines = ["", "## Who can do what", "",
             "Each role's grants, each resource policy and what encrypts what, per configuration (dev/permissions.py). "
             "`<Path>` is this stack's resource at that construct path; `${AWS::...}` is filled in at deploy time."]
    for assembly in assemblies:
        if assembly.template_path:
            lines += ["", f"### Configuration `{assembly.name}`", "", *who_can_do_what(assembly.template, assembly.names)]
    return lines


RAW_OUTPUTS = [
    "", "## Raw outputs", "",
    "Each scanner's own machine output, next to this report (SARIF 2.1.0 loads in any SARIF viewer):", "",
    "- `synth-<configuration>/validation-report.json`: cdk-nag's and the CDK's policy validation report",
    "- `cfn-lint.json`: cfn-lint's JSON",
    "- `checkov.sarif`, `checkov.json`: checkov's SARIF and JSON",
    "- `hadolint.sarif`: hadolint's SARIF",
    "",
]


def audit(assemblies: list[Assembly], dockerfile: Path, out: Path, started: float) -> list[Gate]:
    """Run the gates over the assemblies and write out/report.md."""
    gates = [nag_gate(assemblies), cfn_lint_gate(assemblies, out), checkov_gate(assemblies, dockerfile, out),
             hadolint_gate(dockerfile, out)]
    report = summary_lines(gates, time.monotonic() - started) + configuration_lines(assemblies)
    report += accepted_lines(gates) + credential_sections(assemblies) + permission_sections(assemblies) + RAW_OUTPUTS
    (out / "report.md").write_text("\n".join(report))
    return gates


def assemblies(args: argparse.Namespace) -> list[Assembly]:
    if args.assembly is None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda item: synthesize(item[0], item[1], args.out), CONFIGURATIONS.items()))
    given = Assembly(args.assembly.name, {}, args.assembly.resolve())
    if given.template_path is None:
        raise AuditError(f"--assembly {args.assembly} holds no *.template.json: give a folder `cdk synth -o DIR` wrote")
    return [given]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--assembly", type=Path, help="audit this cloud assembly instead of synthesizing the configurations")
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "etl_job" / "Dockerfile")
    parser.add_argument("--out", type=Path, default=ROOT / "cdk.out" / "audit", help="where the report and raw outputs go")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    started = time.monotonic()
    try:
        for path in (CDK, CHECKOV, VENV_BIN / "cfn-lint", VENV_BIN / "hadolint"):
            if not path.exists():
                raise AuditError(f"{shown(path)} is missing: run `make setup`")
        if not args.dockerfile.is_file():
            raise AuditError(f"--dockerfile {args.dockerfile} is not a file")
        args.out.mkdir(parents=True, exist_ok=True)
        audited = assemblies(args)
        gates = audit(audited, args.dockerfile.resolve(), args.out, started)
    except AuditError as error:
        print(f"audit: {error}", file=sys.stderr)
        return 2
    for gate in gates:
        print(f"{'FAIL' if gate.failures else 'ok  '} {gate.name}: {gate.summary}")
        print("".join(f"       {cell(f.line())}\n" for f in gate.failures), end="")
    failed = any(g.failures for g in gates)
    print(f"{'FAIL' if failed else 'PASS'}: {len(audited)} configurations in {time.monotonic() - started:.0f} s; "
          f"report: {shown(args.out / 'report.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
