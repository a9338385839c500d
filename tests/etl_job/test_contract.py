"""The contract from both sides: each setting the stack sends the job has one rule, which both apply."""

from __future__ import annotations

import pytest

from etl_job import contract, rules
from etl_job.config import load_config
from etl_job.errors import JobError
from stacks.config import KEYS, ConfigError
from tests.support import BASE_SETTINGS, build_config

ENV = rules.env_names(contract.JobSettings)  # config key -> environment variable


def test_every_setting_of_the_contract_is_a_config_key_and_a_variable_the_stack_sets() -> None:
    assert set(ENV.values()) | {contract.LOG_FORMAT} == set(contract.STACK_SET) | set(contract.OPTIONAL_SET)
    assert set(ENV) <= set(KEYS)


# Values the two hand-written validators disagreed on. Now both refuse them, with the one rule's words.
DRIFTED = [
    # The job took [A-Za-z0-9_-]{1,64}; the stack (and the README) lower-case letters, digits and '-', at most 20.
    ("stage", "Prod_1"),
    ("stage", "a" * 21),
    # The job's int() took digit separators, signs and non-ASCII digits; the stack's isdigit() took '٥' as 5
    # and crashed with a traceback on '²'.
    ("batch_size", "5_000"),
    ("concurrency", "+8"),
    ("batch_size", "٥"),
    ("concurrency", "²"),
    # The job stripped the value before checking it; the stack refused it (a trailing newline once let a bad
    # table name through).
    ("source_table", "my-project.raw.customers\n"),
    ("key_column", " id"),
]


@pytest.mark.parametrize(("key", "value"), DRIFTED, ids=[f"{k}={v!r}" for k, v in DRIFTED])
def test_a_value_one_side_took_and_the_other_refused_is_now_refused_by_both(key: str, value: str) -> None:
    allowed = rules.rule_of(contract.JobSettings, key).allowed

    with pytest.raises(ConfigError) as stack:
        build_config(**{key: value})
    with pytest.raises(JobError) as job:
        load_config({**BASE_SETTINGS, ENV[key]: value})

    assert f"config key '{key}': {value!r} is not valid; expected {allowed}" in str(stack.value)
    assert f"  - {ENV[key]}={value!r} " in str(job.value) and f": use {allowed}" in str(job.value)


# Values both accept: the job reads back from the stack's environment exactly what the stack validated.
AGREED = [
    ("stage", "prod"),
    ("batch_size", "1"),
    ("batch_size", 100_000),
    ("concurrency", " 8 "),
    ("key_column", "_customer_id"),
    ("log_level", "warning"),
    ("source_table", "example.com:legacy-project.raw.events"),
    ("max_bytes_billed", "10485760"),
    ("source_filter", "  id > 1  "),
]


@pytest.mark.parametrize(("key", "value"), AGREED, ids=[f"{k}={v!r}" for k, v in AGREED])
def test_a_value_the_stack_takes_reaches_the_job_unchanged(key: str, value: object) -> None:
    stack = build_config(**{key: value})
    environment = stack.environment()

    job = load_config(environment)

    assert getattr(job, key) == getattr(stack, key)
    assert {name: getattr(job, name) for name in ENV} == {name: getattr(stack, name) for name in ENV}


def test_the_timeout_is_whole_minutes_on_the_stack_and_any_positive_minutes_in_the_job() -> None:
    # Deliberately two rules with one bound: the stack counts alarm windows and the fan-out's task timeout in
    # whole minutes; the job also takes fractions (its tests time out in 3 seconds). Every stack value fits the job.
    with pytest.raises(ConfigError, match=r"'timeout_minutes': '1.5' is not valid; expected a whole number from 1 to 10080"):
        build_config(timeout_minutes="1.5", expected_run_minutes="1")
    assert load_config({**BASE_SETTINGS, contract.TIMEOUT_MINUTES: "1.5"}).timeout_minutes == 1.5
    for minutes in ("1", str(contract.MAX_TIMEOUT_MINUTES)):
        stack = build_config(timeout_minutes=minutes, expected_run_minutes="1", schedule="rate(7 days)")
        assert load_config(stack.environment()).timeout_minutes == int(minutes)
    with pytest.raises(JobError, match="use a number above 0 and at most 10080"):
        load_config({**BASE_SETTINGS, contract.TIMEOUT_MINUTES: "1e3"})  # float() took exponents, 'inf' and '1_0'


def test_every_problem_is_one_line_naming_the_input_on_both_sides() -> None:
    with pytest.raises(ConfigError) as stack:
        build_config(batch_size="0", stage="dev", cpu="lots", key_column="1id")
    lines = str(stack.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["config key 'key_column'", "config key 'batch_size'",
                                                      "config key 'cpu'"]
    assert all(line.endswith("=VALUE)") for line in lines)

    with pytest.raises(JobError) as job:
        load_config({contract.BATCH_SIZE: "0", contract.KEY_COLUMN: "1id"})
    assert [line.split(" ")[3].split("=")[0] for line in str(job.value).splitlines()[1:]] == [
        contract.SOURCE_TABLE, contract.DESTINATION_TABLE, contract.KEY_COLUMN, contract.BATCH_SIZE]
