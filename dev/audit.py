"""The audit gates: synthesize each configuration, then cdk-nag, cfn-lint, checkov and hadolint.

`python -m dev.audit` (`make audit`) writes cdk.out/audit/report.md for auditors plus each tool's raw
output, prints a short summary, and exits 1 when a gate fails (2 when a tool cannot run at all).
Offline: the pinned CDK CLI synthesizes with --no-lookups, checkov runs with --skip-download.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dev.key_readers import key_readers
from etl_job import contract

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "cdk.out" / "audit"
CDK = ROOT / "node_modules" / ".bin" / "cdk"
VENV_BIN = Path(sys.executable).parent
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
DOCKERFILE = ROOT / "etl_job" / "Dockerfile"
ACKNOWLEDGED = "aws:cdk:acknowledged-rules"  # aws_cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY

# Every branch of the stack that changes resources or permissions: both stages (prod with flow logs), then the
# optional features (Spot, log and secret CMKs, an alarm e-mail, a break-glass role), bring-your-own VPC and
# secret ARN, and the keyless configuration (Workload Identity Federation: no secret at all).
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "dev": {"stage": "dev"},
    "prod": {"stage": "prod"},
    "dev-spot-kms": {
        "stage": "dev",
        "capacity": "spot",
        "log_kms_key": "true",
        "secret_kms_key": "true",
        "alarm_email": "ops@example.com",
        "break_glass_role_arn": "arn:aws:iam::123456789012:role/security/break-glass",
    },
    "dev-existing-vpc": {
        "stage": "dev",
        "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
        "assign_public_ip": "false",
        "google_credentials_secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/google-etl-key-AbCdEf",
    },
    "dev-wif": {
        "stage": "dev",
        "google_auth": "workload_identity",
        "workload_identity_provider": "//iam.googleapis.com/projects/123456789012/locations/global/"
                                      "workloadIdentityPools/etl-pool/providers/aws-etl",
        "google_service_account": "etl-job@my-gcp-project.iam.gserviceaccount.com",
    },
    "dev-shards": {"stage": "dev", "shards": "8"},
}

# Resource types that carry a resource-based policy, and the property that holds it.
RESOURCE_POLICIES = {
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::Events::EventBusPolicy": "Statement",
    "AWS::Logs::ResourcePolicy": "PolicyDocument",
    "AWS::ECR::Repository": "RepositoryPolicyText",
}


class ToolMissing(Exception):
    """A tool the audit runs is not installed; the message says how to install it."""


@dataclass
class Gate:
    name: str
    version: str = ""
    failures: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Synth:
    name: str
    context: dict[str, str]
    outdir: Path
    returncode: int = 0
    output: str = ""
    template_path: Path | None = None

    @property
    def template(self) -> dict[str, Any]:
        assert self.template_path is not None
        return json.loads(self.template_path.read_text())

    def metadata(self, kind: str) -> dict[str, Any]:
        """Construct path -> the data of its metadata entry ``kind`` (the cloud assembly keeps them per stack)."""
        assert self.template_path is not None
        artifact = self.template_path.name.removesuffix(".template.json")
        entries = json.loads((self.outdir / "manifest.json").read_text())["artifacts"][artifact]
        if "additionalMetadataFile" in entries:
            entries = json.loads((self.outdir / entries["additionalMetadataFile"]).read_text())
        else:
            entries = entries.get("metadata", {})
        return {path: e["data"] for path, items in entries.items() for e in items if e["type"] == kind}

    @property
    def names(self) -> dict[str, str]:
        """Logical id -> the construct path a reader recognises (Job/TaskDefinition/TaskRole)."""
        return {logical_id: short_path(path) for path, logical_id in self.metadata("aws:cdk:logicalId").items()}


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        CDK_DISABLE_VERSION_CHECK="1",
        npm_config_update_notifier="false",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_HOME=env.get("CDK_HOME", str(ROOT / ".cdk-home")),
    )
    return env


def run(args: list[str | Path], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(a) for a in args], cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        raise ToolMissing(f"{args[0]} is not installed: run `make setup`") from None
    except subprocess.TimeoutExpired:
        raise ToolMissing(f"{Path(str(args[0])).name} did not finish within {timeout} s") from None


def require(path: Path) -> Path:
    if not path.exists():
        raise ToolMissing(f"{path.relative_to(ROOT)} is missing: run `make setup`")
    return path


# --- synth and cdk-nag -------------------------------------------------------------------------


def synthesize(name: str, context: dict[str, str]) -> Synth:
    outdir = OUT / f"synth-{name}"
    shutil.rmtree(outdir, ignore_errors=True)  # stale asset folders would otherwise pile up
    args: list[str | Path] = [CDK, "synth", "--no-lookups", "--quiet", "-o", outdir]
    for key, value in context.items():
        args += ["-c", f"{key}={value}"]
    result = run(args)
    synth = Synth(name, context, outdir, result.returncode, (result.stdout + result.stderr).strip())
    templates = sorted(outdir.glob("*.template.json"))
    synth.template_path = templates[0] if result.returncode == 0 and templates else None
    return synth


def nag_gate(synths: list[Synth]) -> tuple[Gate, list[dict[str, str]]]:
    """Findings from each synth's validation-report.json (cdk-nag's AwsSolutions rules and the CDK's own
    construct warnings), and the acknowledgments with their reasons from the construct metadata."""
    gate = Gate("synth validation", "cdk-nag 3.0.2 AwsSolutions + the CDK's own rules and warnings, in every synth")
    acknowledged: dict[tuple[str, str, str], set[str]] = {}
    raised: set[tuple[str, str]] = set()
    for synth in synths:
        report_path = synth.outdir / "validation-report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {"pluginReports": []}
        for plugin in report["pluginReports"]:
            for violation in plugin.get("violations", []):
                for construct in violation.get("violatingConstructs", []):
                    what = violation.get("description", "").split(". ")[0][:160]
                    gate.failures.append(f"{synth.name}: {violation['ruleName']} on {construct['constructPath']}: {what}")
            for accepted in plugin.get("suppressedViolations", []):
                raised |= {(accepted["acknowledgedId"], short_path(c["constructPath"])) for c in accepted["violatingConstructs"]}
        if synth.returncode != 0:
            if not any(f.startswith(f"{synth.name}:") for f in gate.failures):
                tail = "\n    ".join(synth.output.splitlines()[-15:])
                gate.failures.append(f"{synth.name}: synth failed:\n    {tail}")
            continue
        for path, rules in synth.metadata(ACKNOWLEDGED).items():
            for rule, reason in rules.items():
                acknowledged.setdefault((rule, short_path(path), reason), set()).add(synth.name)
    rows = [
        {
            "rule": rule.split("::", 1)[1] if rule.startswith("AwsSolutions::") else rule,
            "resource": path or "(the stack)",
            "reason": reason,
            "configurations": ", ".join(sorted(names)),
            "raised": "yes" if (rule, path) in raised else "no",
        }
        for (rule, path, reason), names in sorted(acknowledged.items())
    ]
    gate.summary = f"{len(gate.failures)} findings, {len(rows)} acknowledged with a reason"
    return gate, rows


def short_path(construct_path: str) -> str:
    parts = construct_path.strip("/").split("/")[1:]  # drop the stack name
    if parts and parts[-1] == "Resource":
        parts = parts[:-1]
    return "/".join(parts)


# --- cfn-lint, checkov, hadolint ---------------------------------------------------------------


def cfn_lint_gate(synths: list[Synth]) -> tuple[Gate, list[dict[str, str]]]:
    cfn_lint = require(VENV_BIN / "cfn-lint")
    gate = Gate("cfn-lint", run([cfn_lint, "--version"]).stdout.strip())
    templates = [s.template_path for s in synths if s.template_path]
    if not templates:  # cfn-lint with no file would wait for a template on stdin
        gate.failures.append("no template to lint: every synth failed")
        gate.summary = "not run"
        return gate, []
    result = run([cfn_lint, "--format", "json", "--", *templates])
    (OUT / "cfn-lint.json").write_text(result.stdout)
    try:
        matches = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        matches = None
    if matches is None or (result.returncode != 0 and not matches):
        gate.failures.append(f"cfn-lint could not run (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        matches = []
    for match in matches:
        where = "/".join(str(p) for p in match.get("Location", {}).get("Path") or [])
        config = config_of(synths, match.get("Filename", ""))
        gate.failures.append(f"{config}: {match['Rule']['Id']} {where}: {match['Message']}")
    ignored = []
    for synth in synths:
        if synth.template_path:
            for logical_id, resource in synth.template["Resources"].items():
                for rule in resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", []):
                    ignored.append({"rule": rule, "resource": logical_id, "configuration": synth.name})
    gate.summary = f"{len(matches)} errors or warnings in {len(templates)} templates, {len(ignored)} rules ignored"
    return gate, ignored


def config_of(synths: list[Synth], filename: str) -> str:
    for synth in synths:
        if synth.template_path and Path(filename).resolve() == synth.template_path.resolve():
            return synth.name
    path = Path(filename).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else filename


def checkov_gate(synths: list[Synth]) -> tuple[Gate, list[dict[str, str]]]:
    checkov = require(CHECKOV)
    gate = Gate("checkov", "checkov " + run([checkov, "--version"]).stdout.strip())
    args: list[str | Path] = [checkov, "--config-file", ROOT / ".checkov.yaml", "--skip-download", "-o", "json"]
    for synth in synths:
        if synth.template_path:
            args += ["-f", synth.template_path.relative_to(ROOT)]
    args += ["-f", DOCKERFILE.relative_to(ROOT)]
    result = run(args)
    (OUT / "checkov.json").write_text(result.stdout)
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        gate.failures.append(f"checkov could not run (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        return gate, []
    reports = reports if isinstance(reports, list) else [reports]
    skipped: list[dict[str, str]] = []
    passed = 0
    for report in reports:
        passed += report["summary"]["passed"]
        if report["summary"].get("parsing_errors"):
            gate.failures.append(f"{report['check_type']}: {report['summary']['parsing_errors']} files could not be parsed")
        for check in report["results"]["failed_checks"]:
            where = config_of(synths, check["file_abs_path"])
            gate.failures.append(f"{where}: {check['check_id']} {check['resource']}: {check['check_name']}")
        for check in report["results"]["skipped_checks"]:
            resource = check["resource"]
            for synth in synths:
                if synth.template_path and Path(check["file_abs_path"]).resolve() == synth.template_path.resolve():
                    kind, _, logical_id = resource.partition(".")
                    resource = f"{synth.names.get(logical_id, logical_id)} ({kind})"
            skipped.append(
                {
                    "check": f"{check['check_id']} {check['check_name']}",
                    "resource": resource,
                    "reason": check["check_result"].get("suppress_comment", ""),
                    "configuration": config_of(synths, check["file_abs_path"]),
                }
            )
    # A skip whose id matches no check of its resource (a typo, a renamed check) would hide nothing today
    # and mislead the reader: it fails the gate too.
    used = {(Path(c["file_abs_path"]).resolve(), c["check_id"], c["resource"]) for r in reports for c in r["results"]["skipped_checks"]}
    for synth in synths:
        if synth.template_path:
            for logical_id, resource in synth.template["Resources"].items():
                for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                    if (synth.template_path.resolve(), skip["id"], f"{resource['Type']}.{logical_id}") not in used:
                        gate.failures.append(f"{synth.name}: skip {skip['id']} on {synth.names.get(logical_id, logical_id)} matches no check")
    gate.summary = f"{passed} passed, {len(gate.failures)} failed, {len(skipped)} skipped per resource"
    return gate, skipped


def hadolint_gate() -> Gate:
    hadolint = require(VENV_BIN / "hadolint")
    gate = Gate("hadolint", run([hadolint, "--version"]).stdout.strip())
    result = run([hadolint, "--format", "json", DOCKERFILE.relative_to(ROOT)])
    (OUT / "hadolint.json").write_text(result.stdout)
    try:
        findings = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        findings = []
        gate.failures.append(f"hadolint could not run (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    for finding in findings:
        gate.failures.append(f"etl_job/Dockerfile:{finding['line']} {finding['code']} ({finding['level']}): {finding['message']}")
    if result.returncode != 0 and not gate.failures:
        gate.failures.append(f"hadolint exited {result.returncode}: {result.stderr.strip()[-500:]}")
    gate.summary = f"{len(findings)} findings in etl_job/Dockerfile"
    return gate


# --- who can do what ---------------------------------------------------------------------------


def readable(value: Any, names: dict[str, str]) -> str:
    """A template value with Refs and GetAtts shown as <Construct/Path> and pseudo parameters as ${AWS::...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(readable(v, names) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{names[argument]}>" if argument in names else f"${{{argument}}}"
        if function == "Fn::GetAtt":
            return f"<{names.get(argument[0], argument[0])}>.{argument[1]}"
        if function == "Fn::Join":
            return argument[0].join(readable(v, names) for v in argument[1])
        if function == "Fn::Sub":
            return argument if isinstance(argument, str) else argument[0]
    return json.dumps(value)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, str):
        document = json.loads(document)
    if isinstance(document, dict) and "Statement" in document:
        return as_list(document["Statement"])
    return as_list(document)  # EventBusPolicy holds a single statement


def principal_text(principal: Any, names: dict[str, str]) -> str:
    if principal == "*":
        return "anyone (*)"
    if isinstance(principal, dict):
        return "; ".join(f"{kind} {readable(value, names)}" for kind, value in principal.items())
    return readable(principal, names)


def statement_text(statement: dict[str, Any], names: dict[str, str], with_principal: bool = False) -> str:
    actions = statement.get("Action", statement.get("NotAction"))
    text = f"**{statement['Effect']}** "
    if with_principal:
        text += f"{principal_text(statement.get('Principal'), names)}: "
    text += ("all but " if "NotAction" in statement else "") + ", ".join(f"`{a}`" for a in as_list(actions))
    text += " on " + ", ".join(f"`{readable(r, names)}`" for r in as_list(statement.get("Resource", "*")))
    for operator, conditions in statement.get("Condition", {}).items():
        for key, value in conditions.items():
            text += f" if {operator} `{key}` = `{readable(value, names)}`"
    return text


def iam_summary(template: dict[str, Any], names: dict[str, str]) -> list[str]:
    resources = template["Resources"]
    lines: list[str] = []
    for logical_id, role in resources.items():
        if role["Type"] != "AWS::IAM::Role":
            continue
        properties = role["Properties"]
        trusted = [principal_text(s.get("Principal"), names) for s in statements(properties["AssumeRolePolicyDocument"])]
        lines += [f"#### Role `{names[logical_id]}` ({logical_id})", f"Assumed by: {', '.join(trusted)}", ""]
        granted = [s for policy in properties.get("Policies", []) for s in statements(policy["PolicyDocument"])]
        for policy in resources.values():
            if policy["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {"Ref": logical_id} in policy["Properties"].get("Roles", []):
                granted += statements(policy["Properties"]["PolicyDocument"])
        lines += [f"- {statement_text(s, names)}" for s in granted] or ["- nothing"]
        lines += [f"- managed policy `{readable(arn, names)}`" for arn in properties.get("ManagedPolicyArns", [])]
        lines.append("")
    for logical_id, resource in resources.items():
        key = RESOURCE_POLICIES.get(resource["Type"])
        if key and key in resource.get("Properties", {}):
            lines += [f"#### Resource policy of `{names[logical_id]}` ({resource['Type']})"]
            lines += [f"- {statement_text(s, names, with_principal=True)}" for s in statements(resource["Properties"][key])]
            lines.append("")
    return lines


def keys_summary(template: dict[str, Any], names: dict[str, str]) -> list[str]:
    """Where the secrets and keys are, and what encrypts what."""
    lines = []
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::SecretsManager::Secret":
            key = readable(properties["KmsKeyId"], names) if "KmsKeyId" in properties else "the AWS-managed key aws/secretsmanager"
            lines.append(f"- Secret `{names[logical_id]}`: the template holds only a placeholder value; encrypted with {key}")
        elif kind == "AWS::KMS::Key":
            rotation = "rotated yearly" if properties.get("EnableKeyRotation") else "NOT rotated"
            lines.append(f"- KMS key `{names[logical_id]}` ({properties.get('Description', '')}), {rotation}")
        elif kind in ("AWS::Logs::LogGroup", "AWS::SNS::Topic", "AWS::SQS::Queue"):
            key = properties.get("KmsKeyId") or properties.get("KmsMasterKeyId")
            how = readable(key, names) if key else ("SQS-managed keys" if properties.get("SqsManagedSseEnabled") else "the service's own key")
            lines.append(f"- {kind.split('::')[1]} `{names[logical_id]}`: encrypted at rest with {how}")
        elif kind == "AWS::ECS::TaskDefinition":
            for container in properties.get("ContainerDefinitions", []):
                for secret in container.get("Secrets", []):
                    lines.append(
                        f"- Container `{container['Name']}` gets `{secret['Name']}` from `{readable(secret['ValueFrom'], names)}` at start"
                    )
                lines += google_credentials_summary(container)
    return lines


def google_credentials_summary(container: dict[str, Any]) -> list[str]:
    """Which Google credential the job holds in this configuration, where it lives and for how long."""
    environment = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
    if contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG in environment:
        wif = json.loads(environment[contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG])
        impersonated = "service_account_impersonation_url" in wif
        return [
            "- Google credentials (workload_identity): no Google key exists. The credential configuration in the plain "
            f"environment (`{contract.GOOGLE_WORKLOAD_IDENTITY_CONFIG}`) holds no secret: audience `{wif['audience']}`",
            "  - the task role's AWS credentials: served by the ECS container endpoint into the task's memory only; "
            "temporary, rotated by ECS before they expire (hours)",
            "  - Google's federated token (STS): in the task's memory only; 1 hour, renewed 3 min 45 s before expiry",
            *(["  - the service account's access token (IAM Credentials generateAccessToken): in the task's memory "
               "only; 1 hour, renewed likewise"] if impersonated else []),
        ]
    return [
        f"- Google credentials (key): a service-account key in the Secrets Manager secret named above, read into the container's environment "
        f"(`{contract.GOOGLE_CREDENTIALS_JSON}`) at each start; it lives until it is deleted in GCP (Google keys do not "
        "expire unless an organization policy sets iam.serviceAccountKeyExpiryHours)",
    ]


# --- the report --------------------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return "unknown"
    return f"{head}{' with uncommitted changes' if dirty else ''}" if head else "unknown"


def write_report(
    synths: list[Synth],
    gates: list[Gate],
    acknowledged: list[dict[str, str]],
    checkov_skips: list[dict[str, str]],
    cfn_lint_ignores: list[dict[str, str]],
    seconds: float,
) -> Path:
    passed = all(g.ok for g in gates)
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
    ]
    lines += [f"| {g.name} | {cell(g.version)} | {'pass' if g.ok else 'FAIL'} | {cell(g.summary)} |" for g in gates]
    failures = [f"- {g.name}: {cell(f)}" for g in gates for f in g.failures]
    if failures:
        lines += ["", "## Failures", "", *failures]
    lines += [
        "",
        "## Configurations checked",
        "",
        "Each is synthesized by the pinned CDK CLI (`cdk synth --no-lookups -c KEY=VALUE ...`) over cdk.json's values.",
        "",
        "| Name | Context overrides | Template |",
        "|---|---|---|",
    ]
    for s in synths:
        template = s.template_path.relative_to(ROOT) if s.template_path else "synth failed"
        lines.append(f"| {s.name} | {cell(' '.join(f'{k}={v}' for k, v in s.context.items()))} | `{template}` |")
    lines += ["", "## Accepted findings and their reasons", "", "### Synth validation: cdk-nag (AwsSolutions), the CDK's own rules and warnings", ""]
    lines += [
        "Read from the construct metadata (`aws:cdk:acknowledged-rules`). *Raised*: whether the rule actually "
        "reported this resource (in any configuration), or the acknowledgment is only kept in case.",
        "",
        "| Rule | Resource | Reason | Configurations | Raised |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {cell(a['rule'])} | `{a['resource']}` | {cell(a['reason'])} | {a['configurations']} | {a['raised']} |"
        for a in acknowledged
    ]
    lines += ["", "### checkov, per resource (template Metadata `checkov: skip`)", ""]
    lines += ["| Check | Resource | Reason | Configurations |", "|---|---|---|---|"]
    merged: dict[tuple[str, str, str], list[str]] = {}
    for skip in checkov_skips:
        merged.setdefault((skip["check"], skip["resource"], skip["reason"]), []).append(skip["configuration"])
    lines += [f"| {cell(c)} | `{r}` | {cell(why)} | {', '.join(sorted(set(n)))} |" for (c, r, why), n in sorted(merged.items())]
    lines += ["", "### checkov, whole checks skipped in `.checkov.yaml` (for what has no resource to sit on)", "", "```yaml"]
    lines += [(ROOT / ".checkov.yaml").read_text().rstrip(), "```", "", "### cfn-lint", ""]
    if cfn_lint_ignores:
        lines += [f"- {i['rule']} ignored on `{i['resource']}` ({i['configuration']})" for i in cfn_lint_ignores]
    else:
        lines.append("No rule is ignored: every error and warning of cfn-lint's default rule set fails the audit.")
    lines += ["", "### hadolint", "", "No rule is ignored."]
    lines += ["", "## Who can read the key", "",
              "Every principal and every route to the Google key's value, per configuration (dev/key_readers.py)."]
    for s in synths:
        if s.template_path:
            lines += ["", f"### Configuration `{s.name}`", "", *key_readers(s.template, s.names)]
    lines += [
        "",
        "## Who can do what, and where the keys are",
        "",
        "`<Path>` is the resource of this stack at that construct path (a Ref: its ARN or name; `.Arn`: its ARN); "
        "`${AWS::...}` is filled in at deploy time. Generated from the templates; `tests/stacks/test_security.py` "
        "asserts the least-privilege rules on them.",
    ]
    for s in synths:
        if s.template_path:
            names = s.names
            lines += ["", f"### Configuration `{s.name}`", "", "#### Keys and secrets", "", *keys_summary(s.template, names), ""]
            lines += iam_summary(s.template, names)
    lines += [
        "## Raw outputs",
        "",
        "- `synth-<configuration>/`: the cloud assembly, with cdk-nag's `validation-report.json`",
        "- `cfn-lint.json`, `checkov.json`, `hadolint.json`: each tool's own JSON output",
        "",
    ]
    report = OUT / "report.md"
    report.write_text("\n".join(lines))
    return report


def main() -> int:
    started = datetime.datetime.now()
    try:
        for tool in (CDK, CHECKOV, VENV_BIN / "cfn-lint", VENV_BIN / "hadolint"):
            require(tool)
        OUT.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            synths = list(pool.map(lambda item: synthesize(*item), CONFIGURATIONS.items()))
        nag, acknowledged = nag_gate(synths)
        cfn_lint, cfn_lint_ignores = cfn_lint_gate(synths)
        checkov, checkov_skips = checkov_gate(synths)
        gates = [nag, cfn_lint, checkov, hadolint_gate()]
    except ToolMissing as error:
        print(f"audit: {error}", file=sys.stderr)
        return 2
    seconds = (datetime.datetime.now() - started).total_seconds()
    report = write_report(synths, gates, acknowledged, checkov_skips, cfn_lint_ignores, seconds)
    for gate in gates:
        print(f"{'ok  ' if gate.ok else 'FAIL'} {gate.name}: {gate.summary}")
        for failure in gate.failures[:20]:
            print(f"       {failure}")
    print(f"{'PASS' if all(g.ok for g in gates) else 'FAIL'}: {len(synths)} configurations in {seconds:.0f} s; report: {report.relative_to(ROOT)}")
    return 0 if all(g.ok for g in gates) else 1


if __name__ == "__main__":
    sys.exit(main())
