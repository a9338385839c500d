"""Unit tests for the configuration: defaults, validation messages, the contract."""

import pytest

from etl_job import contract
from etl_job.config import Config, TableId, import_transform, load_config
from etl_job.errors import JobError

BASE = {contract.SOURCE_TABLE: "my-project.raw.customers", contract.DESTINATION_TABLE: "my-project.clean.customers"}


def test_defaults():
    config = load_config(BASE)

    assert config == Config(
        source_table=TableId("my-project", "raw", "customers"),
        destination_table=TableId("my-project", "clean", "customers"),
    )
    assert (config.key_column, config.batch_size, config.concurrency) == ("id", 5000, 64)
    assert (config.log_level, config.log_format, config.timeout_minutes) == ("INFO", "json", None)
    assert config.transform == "etl_job.transform:transform"
    assert str(config.errors_table) == "my-project.clean.customers_errors"
    assert config.destination_table.sql == "`my-project.clean.customers`"


def test_log_format_defaults_to_text_on_a_terminal_and_json_otherwise():
    assert load_config(BASE, is_tty=True).log_format == "text"
    assert load_config(BASE, is_tty=False).log_format == "json"
    assert load_config({**BASE, contract.LOG_FORMAT: "JSON"}, is_tty=True).log_format == "json"


def test_every_variable_the_stack_sets_is_read():
    env = {
        **BASE,
        contract.KEY_COLUMN: "customer_id",
        contract.BATCH_SIZE: "1000",
        contract.CONCURRENCY: "8",
        contract.LOG_LEVEL: "debug",
        contract.LOG_FORMAT: "text",
        contract.STAGE: "prod",
        contract.TIMEOUT_MINUTES: "0.05",
    }
    assert set(env) == set(contract.STACK_SET)

    config = load_config(env)

    assert (config.key_column, config.batch_size, config.concurrency) == ("customer_id", 1000, 8)
    assert (config.log_level, config.log_format, config.stage) == ("DEBUG", "text", "prod")
    assert config.timeout_minutes == 0.05


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (contract.SOURCE_TABLE, "", "ETL_SOURCE_TABLE is not set"),
        (contract.SOURCE_TABLE, "raw.customers", "is not a table id: use project.dataset.table"),
        (contract.DESTINATION_TABLE, "p-roject.d.t`; DROP", "is not a table id"),
        (contract.DESTINATION_TABLE, BASE[contract.SOURCE_TABLE], "are the same table"),
        (contract.KEY_COLUMN, "id; --", "is not a column name"),
        (contract.BATCH_SIZE, "0", "ETL_BATCH_SIZE='0' is invalid: use a whole number of at least 1"),
        (contract.BATCH_SIZE, "5e3", "ETL_BATCH_SIZE='5e3' is invalid"),
        (contract.BATCH_SIZE, "1000000", "at most 100000"),
        (contract.CONCURRENCY, "-4", "ETL_CONCURRENCY='-4' is invalid"),
        (contract.TIMEOUT_MINUTES, "0", "use a positive number of minutes"),
        (contract.TIMEOUT_MINUTES, "nan", "ETL_TIMEOUT_MINUTES='nan' is invalid"),
        (contract.TIMEOUT_MINUTES, "soon", "ETL_TIMEOUT_MINUTES='soon' is invalid"),
        (contract.LOG_LEVEL, "LOUD", "use one of DEBUG, INFO, WARNING, ERROR"),
        (contract.LOG_FORMAT, "xml", "use one of json, text"),
        (contract.STAGE, "prod env", "ETL_STAGE='prod env' is invalid"),
        ("ETL_TRANSFORM", "mymodule.transform", "use module:function"),
    ],
)
def test_invalid_values_are_named_with_the_fix(name, value, message):
    with pytest.raises(JobError, match="invalid configuration") as error:
        load_config({**BASE, name: value})
    assert message in str(error.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(JobError) as error:
        load_config({contract.BATCH_SIZE: "x"})
    text = str(error.value)
    assert "ETL_SOURCE_TABLE is not set" in text
    assert "ETL_DESTINATION_TABLE is not set" in text
    assert "ETL_BATCH_SIZE='x' is invalid" in text


def test_domain_scoped_projects_are_table_ids():
    config = load_config({**BASE, contract.SOURCE_TABLE: "example.com:my-project.raw.customers"})
    assert config.source_table.project == "example.com:my-project"


def test_import_transform():
    assert import_transform("etl_job.transform:transform")({"name": "Doe"}) == {"name": "Das"}
    with pytest.raises(JobError, match="ETL_TRANSFORM='no_such_module:f' cannot be imported"):
        import_transform("no_such_module:f")
    with pytest.raises(JobError, match="cannot be imported"):
        import_transform("etl_job.transform:nope")
    with pytest.raises(JobError, match="is not a function"):
        import_transform("etl_job.config:DEFAULT_BATCH_SIZE")
