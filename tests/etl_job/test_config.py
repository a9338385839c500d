"""Unit tests for the configuration: defaults, validation messages, the contract, importing the transform."""

import pytest

from etl_job import contract, schema
from etl_job.config import Config, TableId, import_transform, load_config
from etl_job.errors import JobError
from tests.support import BASE_SETTINGS


def test_defaults():
    config = load_config(BASE_SETTINGS)

    assert config == Config(
        source_table=TableId("my-project", "raw", "customers"),
        destination_table=TableId("my-project", "clean", "customers"),
    )
    assert (config.key_column, config.batch_size, config.concurrency) == ("id", 5000, 64)
    assert (config.log_level, config.log_format, config.timeout_minutes) == ("INFO", "json", None)
    assert config.transform == "etl_job.transform:transform"
    assert (config.shard_index, config.shard_count) == (0, 1)
    assert str(config.errors_table) == "my-project.clean.customers_errors"
    assert config.destination_table.sql == "`my-project.clean.customers`"


def test_log_format_defaults_to_text_on_a_terminal_and_json_otherwise():
    assert load_config(BASE_SETTINGS, is_tty=True).log_format == "text"
    assert load_config(BASE_SETTINGS, is_tty=False).log_format == "json"
    assert load_config({**BASE_SETTINGS, contract.LOG_FORMAT: "JSON"}, is_tty=True).log_format == "json"


def test_every_variable_the_stack_sets_is_read():
    env = {
        **BASE_SETTINGS,
        contract.KEY_COLUMN: "customer_id",
        contract.BATCH_SIZE: "1000",
        contract.CONCURRENCY: "8",
        contract.LOG_LEVEL: "debug",
        contract.LOG_FORMAT: "text",
        contract.STAGE: "prod",
        contract.TIMEOUT_MINUTES: "0.05",
        contract.MAX_BYTES_BILLED: "1099511627776",
    }
    assert set(env) == set(contract.STACK_SET)

    config = load_config(env)

    assert (config.key_column, config.batch_size, config.concurrency) == ("customer_id", 1000, 8)
    assert (config.log_level, config.log_format, config.stage) == ("DEBUG", "text", "prod")
    assert config.timeout_minutes == 0.05
    assert config.max_bytes_billed == 1099511627776


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (contract.SOURCE_TABLE, "", "ETL_SOURCE_TABLE is not set"),
        (contract.SOURCE_TABLE, "raw.customers", "is not a table id: use project.dataset.table"),
        (contract.DESTINATION_TABLE, "p-roject.d.t`; DROP", "is not a table id"),
        (contract.DESTINATION_TABLE, BASE_SETTINGS[contract.SOURCE_TABLE], "are the same table"),
        (contract.KEY_COLUMN, "id; --", "is not a column name"),
        (contract.SOURCE_TABLE, "my-project.raw.customers$20240101", "is not a table id"),
        (contract.SOURCE_TABLE, "my-project.räw.customers", "is not a table id"),
        (contract.SOURCE_TABLE, "a.b.raw.customers", "is not a table id"),
        (contract.BATCH_SIZE, "0", "ETL_BATCH_SIZE='0' is invalid: use a whole number from 1 to 100000, or unset it"),
        (contract.BATCH_SIZE, "5e3", "ETL_BATCH_SIZE='5e3' is invalid"),
        (contract.BATCH_SIZE, "1000000", "ETL_BATCH_SIZE='1000000' is invalid"),
        (contract.CONCURRENCY, "-4", "ETL_CONCURRENCY='-4' is invalid"),
        (contract.LOG_LEVEL, "LOUD", "use one of DEBUG, INFO, WARNING, ERROR"),
        (contract.LOG_FORMAT, "xml", "use one of json, text"),
        (contract.STAGE, "prod env", "ETL_STAGE='prod env' is invalid"),
        ("ETL_TRANSFORM", "mymodule.transform", "use module:function"),
        (contract.MAX_BYTES_BILLED, "1000", "ETL_MAX_BYTES_BILLED='1000' is invalid: use a whole number from 10485760"),
        (contract.MAX_BYTES_BILLED, "1TB", "ETL_MAX_BYTES_BILLED='1TB' is invalid"),
    ],
)
def test_invalid_values_are_named_with_the_fix(name, value, message):
    with pytest.raises(JobError, match="invalid configuration") as error:
        load_config({**BASE_SETTINGS, name: value})
    assert message in str(error.value)


def test_the_shard_set_by_the_state_machine_is_read_and_logged():
    config = load_config({**BASE_SETTINGS, contract.SHARD_INDEX: "7", contract.SHARD_COUNT: "8"})

    assert (config.shard_index, config.shard_count) == (7, 8)
    assert (config.summary()["shard_index"], config.summary()["shard_count"]) == (7, 8)


@pytest.mark.parametrize(
    ("index", "count", "message"),
    [
        ("3", "", "ETL_SHARD_INDEX and ETL_SHARD_COUNT go together: set both or neither"),
        ("", "8", "ETL_SHARD_INDEX and ETL_SHARD_COUNT go together: set both or neither"),
        ("8", "8", "ETL_SHARD_INDEX='8' is invalid: use a whole number from 0 to 7 (below ETL_SHARD_COUNT=8)"),
        ("-1", "8", "ETL_SHARD_INDEX='-1' is invalid: use a whole number from 0 to 7"),
        ("²", "8", "ETL_SHARD_INDEX='²' is invalid"),
        ("0", "0", "ETL_SHARD_COUNT='0' is invalid: use a whole number from 1 to 100"),
        ("0", "101", "ETL_SHARD_COUNT='101' is invalid: use a whole number from 1 to 100"),
        ("0", "eight", "ETL_SHARD_COUNT='eight' is invalid"),
    ],
)
def test_a_bad_shard_is_named_with_the_fix(index, count, message):
    with pytest.raises(JobError) as error:
        load_config({**BASE_SETTINGS, contract.SHARD_INDEX: index, contract.SHARD_COUNT: count})
    (problem,) = str(error.value).splitlines()[1:]
    assert problem.startswith(f"  - {message}")


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "soon", "10081"])
def test_a_bad_timeout_is_one_message_with_the_right_rule(value):
    with pytest.raises(JobError) as error:
        load_config({**BASE_SETTINGS, contract.TIMEOUT_MINUTES: value})
    assert str(error.value).splitlines()[1:] == [
        f"  - ETL_TIMEOUT_MINUTES={value!r} is invalid: use a number above 0 and at most 10080, or unset it"
    ]


def test_all_problems_are_reported_at_once():
    with pytest.raises(JobError) as error:
        load_config({contract.BATCH_SIZE: "x"})
    text = str(error.value)
    assert "ETL_SOURCE_TABLE is not set" in text
    assert "ETL_DESTINATION_TABLE is not set" in text
    assert "ETL_BATCH_SIZE='x' is invalid" in text


def test_domain_scoped_projects_are_table_ids():
    config = load_config({**BASE_SETTINGS, contract.SOURCE_TABLE: "example.com:my-project.raw.customers"})
    assert config.source_table == TableId("example.com:my-project", "raw", "customers")
    assert load_config({**BASE_SETTINGS, contract.SOURCE_TABLE: "my-project.raw.customers-2024"}).source_table.table == (
        "customers-2024"
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_stacks_environment_is_valid_for_the_job_with_the_same_values(stage):
    from stacks.job import job_environment
    from tests.support import build_config

    stack = build_config(stage=stage)
    env = job_environment(stack)

    config = load_config(env)

    assert set(env) == set(contract.STACK_SET)
    assert (str(config.source_table), str(config.destination_table)) == (stack.source_table, stack.destination_table)
    assert (config.key_column, config.batch_size, config.concurrency) == (stack.key_column, stack.batch_size,
                                                                         stack.concurrency)
    assert (config.log_level, config.log_format, config.stage) == (stack.log_level, "json", stack.stage)
    assert config.timeout_minutes == stack.timeout_minutes
    assert config.max_bytes_billed == stack.max_bytes_billed


def test_the_stacks_optional_sql_reaches_the_job_unchanged():
    from stacks.job import job_environment
    from tests.support import build_config

    stack = build_config(source_filter="name LIKE '%Doe%'", transform_sql="transform.sql")
    env = job_environment(stack)

    config = load_config(env)

    assert set(env) == set(contract.STACK_SET) | set(contract.OPTIONAL_SET)
    assert (config.source_filter, config.transform_sql) == (stack.source_filter, stack.transform_sql)
    assert config.transform_sql.endswith("* REPLACE (REPLACE(name, 'Doe', 'Das') AS name)")


@pytest.mark.parametrize(("name", "value", "message"), [
    (contract.SOURCE_FILTER, "   ", "ETL_SOURCE_FILTER is invalid: it is blank"),
    (contract.TRANSFORM_SQL, "x" * (contract.MAX_SQL_CHARS + 1), "ETL_TRANSFORM_SQL is invalid: it is 10001 characters"),
    (contract.TRANSFORM_SQL, "*\x00", "NUL character"),
])
def test_bad_optional_sql_is_refused_by_the_job(name, value, message):
    with pytest.raises(JobError, match=message):
        load_config({**BASE_SETTINGS, name: value})


def test_import_transform():
    function, columns = import_transform("etl_job.transform:transform")
    assert function({"name": "Doe"}) == {"name": "Das"} and columns == []
    with pytest.raises(JobError, match=r"ETL_TRANSFORM='no_such_module:f' cannot be imported \(no module"):
        import_transform("no_such_module:f")
    with pytest.raises(JobError, match="module 'etl_job.transform' has no 'nope'"):
        import_transform("etl_job.transform:nope")
    with pytest.raises(JobError, match="is not a function"):
        import_transform("etl_job.config:DEFAULT_BATCH_SIZE")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import json\nx = json.loads('{')\n",
         r"JSONDecodeError: .* \(raised in .*, line \d+\); fix the module's top-level code"),
        ("import no_such_nlp_library\n",
         "it imports 'no_such_nlp_library', which is not installed; add it to etl_job/requirements.in and run make lock"),
        ("OUTPUT_COLUMNS = ['sentiment']\ndef transform(row): return row\n", "OUTPUT_COLUMNS=.* is invalid"),
        ("OUTPUT_COLUMNS = {'bad name': 'FLOAT64'}\ndef transform(row): return row\n",
         r"OUTPUT_COLUMNS\['bad name'\] is not a column name"),
        ("OUTPUT_COLUMNS = {'score': 'FLAOT64'}\ndef transform(row): return row\n",
         r"OUTPUT_COLUMNS\['score'\]='FLAOT64' is invalid: 'FLAOT64' is not a BigQuery type \(did you mean FLOAT64\? "),
        ("OUTPUT_COLUMNS = {'m': 'ARRAY<ARRAY<INT64>>'}\ndef transform(row): return row\n",
         "BigQuery has no ARRAY of ARRAY"),
        ("OUTPUT_COLUMNS = {'s': 'STRUCT<a INT64'}\ndef transform(row): return row\n", "expected '>' at the end"),
        ("OUTPUT_COLUMNS = {'s': 'STRUCT<INT64>'}\ndef transform(row): return row\n",
         "a STRUCT field needs a name and a type"),
    ],
    ids=["module-error", "missing-dependency", "not-a-mapping", "bad-name", "type-typo", "array-of-array",
         "unclosed-struct", "unnamed-struct-field"],
)
def test_a_transform_module_that_cannot_be_used_is_a_clear_error(tmp_path, monkeypatch, source, message):
    name = f"user_transform_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(JobError, match=f"ETL_TRANSFORM='{name}:transform'|{name}.OUTPUT_COLUMNS") as error:
        import_transform(f"{name}:transform")

    assert error.match(message)


def test_output_columns_are_returned_as_schema_fields_including_repeated_and_struct(tmp_path, monkeypatch):
    _, columns = import_transform("tests.etl_job.sentiment:transform")
    assert [(f.name, f.field_type, f.mode) for f in columns] == [
        ("sentiment", "FLOAT64", "NULLABLE"), ("name_length", "INT64", "NULLABLE")]

    (tmp_path / "nested_output.py").write_text(
        "from google.cloud import bigquery\n"
        "OUTPUT_COLUMNS = {'tags': 'ARRAY<STRING>', 'address': 'struct<city STRING, lines ARRAY<STRING>>',\n"
        "                  'hits': 'ARRAY<STRUCT<at TIMESTAMP, n INTEGER>>',\n"
        "                  'raw': bigquery.SchemaField('ignored', 'JSON', mode='REQUIRED')}\n"
        "def transform(row): return row\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, columns = import_transform("nested_output:transform")

    assert [schema.describe(f) for f in columns] == [
        "ARRAY<STRING>", "STRUCT<city STRING, lines ARRAY<STRING>>", "ARRAY<STRUCT<at TIMESTAMP, n INT64>>", "JSON"]
    assert [(f.name, f.mode) for f in columns] == [
        ("tags", "REPEATED"), ("address", "NULLABLE"), ("hits", "REPEATED"), ("raw", "REQUIRED")]
