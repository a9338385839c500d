"""make cost: a keyless stage pays for no secret."""

from dev.audit_configurations import CONFIGURATIONS
from ops import prices
from ops.cost import estimate
from tests.support import build_config


def test_a_keyless_stage_costs_one_secret_less() -> None:
    with_key, keyless = estimate(build_config()), estimate(build_config(**CONFIGURATIONS["dev-wif"]))
    assert round(with_key["fixed_month"] - keyless["fixed_month"], 4) == prices.SECRET_MONTH
