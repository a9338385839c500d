"""How a run is launched on Fargate: on-demand or Spot capacity, with or without a public IP.

The one place of this rule. The stack applies it to the cluster, the schedule, the fan-out and its
run-now command; ops/runs.py, which runs outside the CDK app, rebuilds it from the stack's
``Capacity`` and ``AssignPublicIp`` outputs. Plain Python, no CDK, so that ops/ can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ON_DEMAND, SPOT = "on-demand", "spot"
CAPACITIES = (ON_DEMAND, SPOT)  # the config key capacity
LAUNCH_TYPE = "FARGATE"
SPOT_CAPACITY_PROVIDER = "FARGATE_SPOT"
ENABLED, DISABLED = "ENABLED", "DISABLED"


@dataclass(frozen=True)
class Launch:
    """``capacity`` is the stage's ``capacity`` setting (on-demand or spot)."""

    capacity: str
    assign_public_ip: bool

    @classmethod
    def from_outputs(cls, capacity: str, public_ip: str) -> Launch:
        """The launch a deployed stack uses, from its Capacity and AssignPublicIp output values."""
        return cls(capacity=capacity, assign_public_ip=public_ip == ENABLED)

    @property
    def spot(self) -> bool:
        return self.capacity == SPOT

    @property
    def public_ip(self) -> str:
        """The ``assignPublicIp`` value of the task's network configuration."""
        return ENABLED if self.assign_public_ip else DISABLED

    def capacity_provider_strategy(self) -> list[dict[str, Any]]:
        """The ECS API's capacity-provider strategy: Fargate Spot only, or none (then the launch type)."""
        return [{"capacityProvider": SPOT_CAPACITY_PROVIDER, "weight": 1}] if self.spot else []

    def run_task_parameters(self) -> dict[str, Any]:
        """RunTask's launch parameter, as the ECS API names it: a launch type and a strategy exclude each other."""
        strategy = self.capacity_provider_strategy()
        return {"capacityProviderStrategy": strategy} if strategy else {"launchType": LAUNCH_TYPE}

    def cli_arguments(self) -> str:
        """The same parameter as `aws ecs run-task` arguments."""
        strategy = self.capacity_provider_strategy()
        if not strategy:
            return f"--launch-type {LAUNCH_TYPE}"
        items = " ".join(",".join(f"{key}={value}" for key, value in item.items()) for item in strategy)
        return f"--capacity-provider-strategy {items}"
