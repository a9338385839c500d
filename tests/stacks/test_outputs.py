"""The stack outputs ops/runs.py reads exist, by name, in the synthesized template of every configuration.

`make run-now` and `make stop-runs` (ops/runs.py) run outside the CDK app and find the deployed job only
through the stack's outputs: an output renamed on either side would break them only after a deploy.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from stacks.launch import Launch
from tests.support import schedule_rule, synth

RUNS = Path(__file__).resolve().parents[2] / "ops" / "runs.py"
# The outputs a stack has only when a run is a Step Functions execution (shards > 1); runs.py tells the
# two kinds of stack apart by StateMachineArn.
FAN_OUT_ONLY = {"StateMachineArn", "ShardCount"}
EXISTING_VPC = {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
                "assign_public_ip": "false"}
# Overrides as other stack tests spell them, so that the session's synth cache serves them.
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "default": {},
    "spot": {"capacity": "spot"},
    "existing-vpc": EXISTING_VPC,
    "shards": {"shards": "8", "max_parallel_shards": "3"},
    "shards-spot-existing-vpc": {"capacity": "spot", "vpc_id": "vpc-0123456789abcdef0", "subnet_ids": "subnet-0123456789abcdef0",
                                 "assign_public_ip": "false", "shards": "8", "max_parallel_shards": "3"},
}


def names_read_by_runs(source: str) -> set[str]:
    """Every output name the module reads from its ``outputs`` mapping: ``outputs["X"]``, ``outputs.get("X")``,
    ``"X" in outputs``. Fails on any other use of ``outputs`` (except passing it on to a function of the module),
    which this scan would miss."""
    tree = ast.parse(source)
    own_functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    names: set[str] = set()
    understood: set[int] = set()
    for node in ast.walk(tree):
        name, used = _output_read(node, own_functions)
        if used is not None:
            understood.add(id(used))
        if name is not None:
            names.add(name)
    unexplained = [node.lineno for node in ast.walk(tree) if _is_outputs(node) and id(node) not in understood
                   and isinstance(node.ctx, ast.Load)]  # type: ignore[attr-defined]
    assert unexplained == [], f"ops/runs.py uses `outputs` in a way this test cannot read, lines {unexplained}"
    return names


def _is_outputs(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "outputs"


def _output_read(node: ast.AST, own_functions: set[str]) -> tuple[str | None, ast.AST | None]:
    """(the output name read, the ``outputs`` node used) for one of the forms names_read_by_runs knows."""
    if isinstance(node, ast.Subscript) and _is_outputs(node.value) and isinstance(node.slice, ast.Constant):
        return node.slice.value, node.value
    if isinstance(node, ast.Compare) and len(node.comparators) == 1 and _is_outputs(node.comparators[0]) \
            and isinstance(node.ops[0], ast.In | ast.NotIn) and isinstance(node.left, ast.Constant):
        return node.left.value, node.comparators[0]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and _is_outputs(node.func.value) and node.args and isinstance(node.args[0], ast.Constant):
        return node.args[0].value, node.func.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in own_functions:
        passed = [arg for arg in node.args if _is_outputs(arg)]
        return None, passed[0] if passed else None
    return None, None


@pytest.fixture(scope="module")
def read() -> set[str]:
    names = names_read_by_runs(RUNS.read_text())
    assert FAN_OUT_ONLY <= names and {"ClusterName", "TaskDefinitionArn", "Capacity", "AssignPublicIp"} <= names, names
    return names


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_output_runs_reads_is_in_the_template(read: set[str], name: str) -> None:
    overrides = CONFIGURATIONS[name]
    outputs = set(synth(**overrides).to_json()["Outputs"])
    if int(overrides.get("shards", "1")) > 1:
        assert read - outputs == set()
    else:
        assert read - FAN_OUT_ONLY - outputs == set()
        assert FAN_OUT_ONLY & outputs == set(), "runs.py would start an execution of a stack that runs one task"


@pytest.mark.parametrize("name", ["default", "spot", "existing-vpc"])
def test_runs_launches_the_task_as_the_schedule_does(name: str) -> None:
    """The Capacity and AssignPublicIp outputs, read back as runs.py reads them, give the schedule's launch."""
    template = synth(**CONFIGURATIONS[name])
    outputs = {key: output["Value"] for key, output in template.to_json()["Outputs"].items()}
    launch = Launch.from_outputs(outputs["Capacity"], outputs["AssignPublicIp"])
    _, rule = schedule_rule(template)
    scheduled = rule["Properties"]["Targets"][0]["EcsParameters"]
    launch_parameters = {key: value for key, value in scheduled.items() if key in ("LaunchType", "CapacityProviderStrategy")}
    assert _api_case(launch_parameters) == launch.run_task_parameters()
    assert scheduled["NetworkConfiguration"]["AwsVpcConfiguration"]["AssignPublicIp"] == launch.public_ip


def _api_case(value: Any) -> Any:
    """CloudFormation's keys (CapacityProvider) as the ECS API that runs.py calls spells them (capacityProvider)."""
    if isinstance(value, list):
        return [_api_case(item) for item in value]
    if isinstance(value, dict):
        return {key[0].lower() + key[1:]: _api_case(item) for key, item in value.items()}
    return value


def test_the_scan_sees_every_form_and_refuses_others() -> None:
    source = '''
def start(stage):
    outputs = stack_outputs(stage)
    if "StateMachineArn" in outputs:
        return _more(outputs)
    return outputs["ClusterName"], outputs.get("Capacity", "on-demand")

def _more(outputs):
    return outputs["ShardCount"]
'''
    assert names_read_by_runs(source) == {"StateMachineArn", "ClusterName", "Capacity", "ShardCount"}
    with pytest.raises(AssertionError, match="lines \\[3\\]"):
        names_read_by_runs("def start(outputs):\n    name = 'ClusterName'\n    return outputs[name]\n")
