"""Column types: OUTPUT_COLUMNS parsed, tables compared at start, and each row checked before it is sent."""

from __future__ import annotations

import datetime
import decimal
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping

from google.cloud import bigquery

from etl_job import JSON_NULL
from etl_job.errors import JobError

# The API answers with legacy names; everything here compares standard SQL names.
STANDARD = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
SCALARS = ("INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "STRING", "BYTES", "DATE", "DATETIME", "TIME",
           "TIMESTAMP", "JSON", "GEOGRAPHY")
# A source column of the left type loads without loss into a destination column of any type on the right.
WIDER = {"INT64": {"NUMERIC", "BIGNUMERIC"}, "NUMERIC": {"BIGNUMERIC"}}
MAX_VALUE_CHARS = 200  # of an offending value, in the errors table
_INT64 = (-(2**63), 2**63 - 1)
_NUMERIC = (decimal.Decimal("1e29"), 9)  # |value| below, and at most this many decimal places
_BIGNUMERIC = (decimal.Decimal("578960446186580977117854925043439539266.35"), 38)
_TOKEN = re.compile(r"\s*(<|>|,|[A-Za-z_][A-Za-z0-9_]*)")


def standard(field_type: str) -> str:
    """The standard SQL name of a type as the API reports it (INTEGER → INT64)."""
    return STANDARD.get(field_type.upper(), field_type.upper())


def describe(field: bigquery.SchemaField) -> str:
    """A field's type in DDL syntax: ``INT64``, ``ARRAY<STRING>``, ``STRUCT<a INT64, b STRING>``."""
    kind = standard(field.field_type)
    if kind == "STRUCT":
        kind = "STRUCT<" + ", ".join(f"{f.name} {describe(f)}" for f in field.fields) + ">"
    return f"ARRAY<{kind}>" if field.mode == "REPEATED" else kind


def parse_type(name: str, text: str) -> bigquery.SchemaField:
    """A column from a DDL type: ``FLOAT64``, ``ARRAY<STRING>``, ``STRUCT<a INT64, b ARRAY<STRING>>``.

    Raises ValueError naming what is wrong.
    """
    tokens = _tokens(text)
    field = _parse(name, tokens)
    if tokens:
        raise ValueError(f"unexpected {tokens[0]!r} after the type")
    return field


def _tokens(text: str) -> list[str]:
    tokens, at = [], 0
    text = text.strip()
    while at < len(text):
        match = _TOKEN.match(text, at)
        if not match:
            raise ValueError(f"unexpected {text[at:].strip()[:20]!r}")
        tokens.append(match.group(1))
        at = match.end()
    return tokens


def _expect(tokens: list[str], token: str) -> None:
    if not tokens or tokens[0] != token:
        raise ValueError(f"expected {token!r}{f' before {tokens[0]!r}' if tokens else ' at the end'}")
    tokens.pop(0)


def _parse(name: str, tokens: list[str], *, in_array: bool = False) -> bigquery.SchemaField:
    if not tokens:
        raise ValueError("a type is missing")
    word = standard(tokens.pop(0))
    if word == "ARRAY":
        if in_array:
            raise ValueError("BigQuery has no ARRAY of ARRAY; use ARRAY<STRUCT<x ARRAY<...>>>")
        _expect(tokens, "<")
        inner = _parse(name, tokens, in_array=True)
        _expect(tokens, ">")
        return bigquery.SchemaField(name, inner.field_type, mode="REPEATED", fields=inner.fields)
    if word == "STRUCT":
        _expect(tokens, "<")
        fields = []
        while True:
            if len(tokens) < 2 or not re.fullmatch(r"[A-Za-z_]\w*", tokens[0]) or tokens[1] in "<>,":
                raise ValueError("a STRUCT field needs a name and a type, e.g. STRUCT<a INT64>")
            fields.append(_parse(tokens.pop(0), tokens))
            if tokens and tokens[0] == ",":
                tokens.pop(0)
                continue
            _expect(tokens, ">")
            return bigquery.SchemaField(name, "RECORD", fields=fields)
    if word not in SCALARS:
        close = difflib.get_close_matches(word, SCALARS + ("ARRAY", "STRUCT"), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"{word!r} is not a BigQuery type ({hint}use one of {', '.join(SCALARS)}, ARRAY<...>, "
                         "STRUCT<...>)")
    return bigquery.SchemaField(name, word)


def output_fields(module: str, columns: Mapping[object, object]) -> list[bigquery.SchemaField]:
    """The transform module's OUTPUT_COLUMNS as schema fields; a bad entry is a JobError naming it and the fix."""
    fields = []
    for name, kind in columns.items():
        where = f"{module}.OUTPUT_COLUMNS[{name!r}]"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,299}", name):
            raise JobError(f"{where} is not a column name: use letters, digits and _")
        if isinstance(kind, bigquery.SchemaField):
            fields.append(bigquery.SchemaField(name, kind.field_type, mode=kind.mode, fields=kind.fields))
            continue
        try:
            fields.append(parse_type(name, kind if isinstance(kind, str) else repr(kind)))
        except ValueError as exc:
            raise JobError(f"{where}={kind!r} is invalid: {exc}; e.g. 'FLOAT64', 'ARRAY<STRING>', "
                           "'STRUCT<a INT64, b STRING>'") from None
    return fields


Check = Callable[[object], "str | None"]  # a value (not None) → why it cannot load, or None if it can
# Where below the column a value fails ("" for the value itself, ".city", "[2].tags") and why.
Problem = tuple[str, str]
ValueCheck = Callable[[object], "Problem | None"]


def _integer(value: object) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,20}", value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return "expected an integer"
    return None if _INT64[0] <= value <= _INT64[1] else "out of INT64's range"


def _float(value: object) -> str | None:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return None
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return None
    return "expected a number"


def _decimal(limit: decimal.Decimal, scale: int, kind: str) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal, str)):
            return "expected a decimal number"
        try:
            number = decimal.Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except decimal.InvalidOperation:
            return "expected a decimal number"
        if not number.is_finite():
            return f"{kind} cannot hold NaN or infinity"
        if number.copy_abs() >= limit:  # copy_abs: abs() would round to the context's 28 digits
            return f"out of {kind}'s range"
        exponent = number.as_tuple().exponent  # an int: the number is finite
        if isinstance(exponent, int) and -exponent > scale:
            return f"more than {scale} decimal places ({kind}); round it"
        return None

    return check


def _parsed(kinds: tuple[type, ...], parse: Callable[[str], object], what: str, *, exclude: tuple[type, ...] = (),
            tz: bool | None = None) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, str):
            try:
                value = parse(value.strip().replace(" ", "T", 1) if kinds[0] is not datetime.time else value.strip())
            except ValueError:
                return f"expected {what}"
        if not isinstance(value, kinds) or isinstance(value, exclude):
            return f"expected {what}"
        if tz is False and getattr(value, "tzinfo", None) is not None:
            return f"expected {what} without a time zone"
        return None

    return check


def _json(value: object) -> str | None:
    if value is JSON_NULL:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"not JSON ({exc})"
    return None


def _instance(kinds: type | tuple[type, ...], what: str) -> Check:
    return lambda value: None if isinstance(value, kinds) else f"expected {what}"


_CHECKS: dict[str, Check] = {
    "INT64": _integer,
    "FLOAT64": _float,
    "NUMERIC": _decimal(*_NUMERIC, "NUMERIC"),
    "BIGNUMERIC": _decimal(*_BIGNUMERIC, "BIGNUMERIC"),
    "BOOL": lambda value: None if isinstance(value, bool) else "expected true or false",
    "STRING": _instance(str, "a string"),
    "BYTES": _instance((bytes, bytearray), "bytes"),
    "DATE": _parsed((datetime.date,), datetime.date.fromisoformat, "a date", exclude=(datetime.datetime,)),
    "DATETIME": _parsed((datetime.datetime,), datetime.datetime.fromisoformat, "a date and time", tz=False),
    "TIME": _parsed((datetime.time,), datetime.time.fromisoformat, "a time of day", tz=False),
    "TIMESTAMP": _parsed((datetime.datetime,), datetime.datetime.fromisoformat, "a timestamp"),
    "JSON": _json,
    "GEOGRAPHY": _instance(str, "a WKT or GeoJSON string"),
}


def value_check(field: bigquery.SchemaField) -> ValueCheck:
    """A function from a value of this column to None if it loads, else (column path, reason)."""
    kind = standard(field.field_type)
    element = _struct_check(field) if kind == "STRUCT" else _scalar_check(kind)
    if field.mode == "REPEATED":
        return _array_check(element, kind)
    if field.mode == "REQUIRED":
        return lambda value: ("", "NULL in a REQUIRED column") if value is None else element(value)
    return lambda value: None if value is None else element(value)


def _struct_check(field: bigquery.SchemaField) -> ValueCheck:
    """One STRUCT value (not NULL): a dict whose every member loads, naming the first that does not."""
    members = {f.name: value_check(f) for f in field.fields}

    def check(value: object) -> Problem | None:
        if not isinstance(value, Mapping):
            return "", "expected a STRUCT (a dict)"
        unknown = value.keys() - members.keys()
        if unknown:
            return "", f"the STRUCT has no field {sorted(unknown)[0]!r}"
        for name, member in members.items():
            problem = member(value.get(name))
            if problem:
                return f".{name}{problem[0]}", problem[1]
        return None

    return check


def _scalar_check(kind: str) -> ValueCheck:
    """One value (not NULL) of a scalar type; JSON_NULL only in a JSON column."""
    test = _CHECKS[kind]

    def check(value: object) -> Problem | None:
        if value is JSON_NULL and kind != "JSON":
            return "", "JSON_NULL outside a JSON column"
        reason = test(value)
        return None if reason is None else ("", f"{reason}, got {type(value).__name__} ({kind})")

    return check


def _array_check(item_check: ValueCheck, kind: str) -> ValueCheck:
    """An ARRAY value: NULL (loads as empty) or a list without NULLs whose every item loads."""

    def check(value: object) -> Problem | None:
        if value is None:
            return None  # loads as an empty array
        if not isinstance(value, (list, tuple)):
            return "", f"expected a list (ARRAY<{kind}>)"
        for index, item in enumerate(value):
            problem = ("", "an ARRAY cannot hold NULL") if item is None else item_check(item)
            if problem:
                return f"[{index}]{problem[0]}", problem[1]
        return None

    return check


def row_checks(schema: Iterable[bigquery.SchemaField]) -> dict[str, ValueCheck]:
    """One value check per column of the schema, by column name."""
    return {field.name: value_check(field) for field in schema}


def row_problem(row: Mapping[str, object], checks: Mapping[str, ValueCheck]) -> tuple[str, str, str] | None:
    """The first value of the row that would not load: (column, reason, excerpt of the value); None if all load."""
    for name, check in checks.items():
        value = row.get(name)
        problem = check(value)
        if problem:
            return name + problem[0], problem[1], excerpt(value)
    return None


def excerpt(value: object) -> str:
    """A short, printable rendering of a value for the errors table."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def destination_schema(source: list[bigquery.SchemaField], output: list[bigquery.SchemaField],
                       lineage: Iterable[bigquery.SchemaField]) -> list[bigquery.SchemaField]:
    """What the job writes: the source's columns (retyped where OUTPUT_COLUMNS redeclares one), new ones, lineage."""
    declared = {f.name: f for f in output}
    names = {f.name for f in source}
    return ([declared.get(f.name, f) for f in source] + [f for f in output if f.name not in names]
            + list(lineage))


def mismatches(expected: list[bigquery.SchemaField], actual: list[bigquery.SchemaField], table_sql: str,
               key: str) -> list[str]:
    """Why rows written under ``expected`` would not load into a table of schema ``actual``, each with its fix."""
    have = {f.name: f for f in actual}
    problems, missing = [], [f for f in expected if f.name not in have]
    if missing:
        adds = ", ".join(f"ADD COLUMN `{f.name}` {describe(f)}" for f in missing)
        problems.append(f"it lacks columns {[f.name for f in missing]}: add them (ALTER TABLE {table_sql} {adds}; "
                        "rows loaded before hold NULL there)")
    for want in expected:
        got = have.get(want.name)
        if got is not None:
            problems += _narrower(want, got, want.name, table_sql, exact=want.name == key)
    wanted = {f.name for f in expected}
    for got in actual:
        if got.name not in wanted and got.mode == "REQUIRED":
            problems.append(f"its column `{got.name}` is REQUIRED but the job writes no value there: "
                            f"ALTER TABLE {table_sql} ALTER COLUMN `{got.name}` DROP NOT NULL")
    return problems


def _narrower(want: bigquery.SchemaField, got: bigquery.SchemaField, path: str, table_sql: str, *,
              exact: bool = False) -> list[str]:
    wanted, held = describe(want), describe(got)
    kind, have = standard(want.field_type), standard(got.field_type)
    if (want.mode == "REPEATED") != (got.mode == "REPEATED") or (kind == "STRUCT") != (have == "STRUCT") or (
            kind != have and (exact or have not in WIDER.get(kind, ()))):
        fix = (f"ALTER TABLE {table_sql} ALTER COLUMN `{path}` SET DATA TYPE {wanted}"
               if "." not in path and have in WIDER and kind in WIDER[have] else
               "recreate the destination with that type, or declare the type it holds in OUTPUT_COLUMNS if "
               "the transform converts the value")
        return [f"its column `{path}` is {held} but the job writes {wanted}: {fix}"]
    problems = []
    if got.mode == "REQUIRED" and want.mode != "REQUIRED":
        problems.append(f"its column `{path}` is REQUIRED but the job's may be NULL: "
                        f"ALTER TABLE {table_sql} ALTER COLUMN `{path}` DROP NOT NULL")
    if kind == "STRUCT":
        fields = {f.name: f for f in got.fields}
        for member in want.fields:
            if member.name not in fields:
                problems.append(f"its STRUCT column `{path}` lacks field `{member.name}` {describe(member)}: add "
                                "it to the table's schema (bq update --schema) or recreate the destination")
            else:
                problems += _narrower(member, fields[member.name], f"{path}.{member.name}", table_sql)
    return problems
