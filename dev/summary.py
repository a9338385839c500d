"""Print what `cdk deploy` would create, from a synthesized template: `python -m dev.summary TEMPLATE`."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def summarize(template: dict) -> str:
    resources = template["Resources"]
    counts = collections.Counter(r["Type"] for r in resources.values())
    (task,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    (rule,) = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in r["Properties"]
    ]
    (container,) = task["ContainerDefinitions"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    lines = [
        template.get("Description", ""),
        f"  task      {task['Family']}: {int(task['Cpu']) / 1024:g} vCPU, {task['Memory']} MiB, "
        f"{task['RuntimePlatform']['CpuArchitecture']}, user {container['User']}, read-only root",
        f"  schedule  {rule['ScheduleExpression']} ({rule['State'].lower()})",
        f"  job       {environment['ETL_SOURCE_TABLE']} -> {environment['ETL_DESTINATION_TABLE']} "
        f"(key {environment['ETL_KEY_COLUMN']}, batches of {environment['ETL_BATCH_SIZE']})",
        _google_auth(container, environment),
        f"  alerts    {counts.get('AWS::CloudWatch::Alarm', 0)} alarms and a task-failure rule -> SNS topic",
        f"  NAT gateways: {counts.get('AWS::EC2::NatGateway', 0)}",
        "  resources:",
    ]
    lines += [f"    {count:3d}  {kind}" for kind, count in sorted(counts.items())]
    return "\n".join(lines)


def _google_auth(container: dict, environment: dict[str, str]) -> str:
    if "GOOGLE_WORKLOAD_IDENTITY_CONFIG" in environment:
        audience = json.loads(environment["GOOGLE_WORKLOAD_IDENTITY_CONFIG"])["audience"]
        return f"  google    workload identity federation from the task role, no secret ({audience})"
    return f"  secrets   {', '.join(s['Name'] for s in container.get('Secrets', []))} from Secrets Manager"


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        sys.exit("usage: python -m dev.summary cdk.out/EtlPipeline-<stage>.template.json (run `make synth` first)")
    print(summarize(json.loads(Path(sys.argv[1]).read_text())))
