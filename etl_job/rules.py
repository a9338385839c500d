"""Validation rules that say what they allow, for pydantic models: the stack's config and the job's environment.

A rule is pydantic metadata (``Annotated[int, whole_number(1, 10)]``): it turns a raw value (a cdk.json
value, a ``-c`` string or an environment variable) into a valid one, or raises an error that carries what
is allowed. ``problems`` reads those errors back; each side words them in its own frame (the stack:
"config key 'k': v is not valid; expected ...", the job: "ETL_K=v is invalid: use ...").
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

ERROR_TYPE = "contract"
MISSING = object()  # Problem.value of a required setting that is not there
_DIGITS = re.compile(r"[0-9]{1,19}")  # a longer number is out of every range (and int() refuses > 4300 digits)
_DECIMAL = re.compile(r"[0-9]{0,9}(?:\.[0-9]{1,9})?")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def invalid(*, allowed: str | None = None, detail: str | None = None, key: str | None = None,
            value: Any = MISSING, show_value: bool = True) -> PydanticCustomError:
    """An error for a rule to raise: what is ``allowed`` (a noun phrase) or a ``detail`` (a full phrase).

    ``key``/``value`` name another setting than the one validated (a check across two); ``{field}`` in
    the text is replaced by how each side names that field (a config key or an environment variable).
    """
    context: dict[str, Any] = {"allowed": allowed, "detail": detail, "key": key, "show_value": show_value}
    if value is not MISSING:
        context["value"] = value
    return PydanticCustomError(ERROR_TYPE, "{allowed}{detail}", context)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Parse a raw value or fail with what is ``allowed``; ``wrong`` says what a bad value is, in the job's words."""

    allowed: str
    parse: Callable[[Any], Any]
    optional: bool = False  # None is valid (unset)
    wrong: str = "is invalid"

    def __call__(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        try:
            return self.parse(value)
        except PydanticCustomError:
            raise
        except (ValueError, TypeError):
            raise invalid(allowed=self.allowed) from None

    def or_unset(self) -> Rule:
        """The same rule, also accepting None (unset)."""
        return dataclasses.replace(self, optional=True)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self)


def whole_number(low: int, high: int, *, allowed: str = "") -> Rule:
    """A whole number from ``low`` to ``high``: an int or its decimal digits (surrounding space ignored)."""

    def parse(value: Any) -> int:
        text = value.strip() if isinstance(value, str) else value
        if isinstance(value, bool) or not isinstance(text, (int, str)) or not _DIGITS.fullmatch(str(text)):
            raise ValueError(value)
        if not low <= int(text) <= high:
            raise ValueError(value)
        return int(text)

    return Rule(allowed or f"a whole number from {low} to {high}", parse)


def number_above(low: float, high: float, *, allowed: str = "") -> Rule:
    """A number above ``low`` and at most ``high``: an int, a float or decimal text (no exponent, inf or nan)."""

    def parse(value: Any) -> float:
        text = value.strip() if isinstance(value, str) else value
        if isinstance(value, bool) or not isinstance(text, (int, float, str)):
            raise ValueError(value)
        if isinstance(text, str) and not (_DECIMAL.fullmatch(text) and any(c.isdigit() for c in text)):
            raise ValueError(value)
        number = float(text)
        if not math.isfinite(number) or not low < number <= high:
            raise ValueError(value)
        return number

    return Rule(allowed or f"a number above {low:g} and at most {high:g}", parse)


def matching(pattern: str, allowed: str, *, convert: Callable[[str], Any] = str, wrong: str = "is invalid") -> Rule:
    """Text that matches ``pattern`` in full (nothing stripped: a trailing newline is an error, not ignored)."""
    compiled = re.compile(pattern)

    def parse(value: Any) -> Any:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(value)
        return convert(value)

    return Rule(allowed, parse, wrong=wrong)


def one_of(options: tuple[str, ...], *, normalise: Callable[[str], str] = str) -> Rule:
    """One of ``options``, after ``normalise`` (e.g. str.upper to accept any case)."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or normalise(value) not in options:
            raise ValueError(value)
        return normalise(value)

    return Rule("one of " + ", ".join(options), parse)


def flag() -> Rule:
    """true or false: a JSON boolean or the words (any case, surrounding space ignored)."""

    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(value)

    return Rule("true or false", parse)


class Problem(NamedTuple):
    """One invalid setting, ready to be worded by either side."""

    key: str  # the field (config key) to change
    value: Any  # what it is, or MISSING
    allowed: str | None
    detail: str | None
    show_value: bool
    wrong: str

    def fix(self, names: Mapping[str, str], *, verb: str) -> str:
        """The detail, or ``verb`` and what is allowed; ``{field}`` placeholders named as ``names`` says."""
        text = self.detail if self.detail is not None else f"{verb} {self.allowed}"
        return _PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(0)), text)


def problems(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Each error of ``model``'s validation as a Problem (a field validated by its alias is named by its field)."""
    fields = {_alias(info.validation_alias) or name: name for name, info in model.model_fields.items()}
    found = []
    for item in error.errors():
        key = fields.get(str(item["loc"][0]), str(item["loc"][0])) if item["loc"] else ""
        rule = rule_of(model, key)
        context = item.get("ctx") or {}
        if item["type"] == "missing":
            found.append(Problem(key, MISSING, rule.allowed if rule else None, None, True, "is not set"))
        elif item["type"] == ERROR_TYPE:
            wrong = rule.wrong if rule and context["detail"] is None else "is invalid"
            found.append(Problem(context["key"] or key, context.get("value", item["input"]), context["allowed"],
                                 context["detail"], context["show_value"], wrong))
        else:
            found.append(Problem(key, item["input"], None, item["msg"], True, "is invalid"))
    return found


def problem_of(key: str, value: Any, error: PydanticCustomError) -> Problem:
    """A rule's error raised outside a model (a rule called directly) as a Problem."""
    context = error.context or {}
    return Problem(context.get("key") or key, context.get("value", value), context.get("allowed"),
                   context.get("detail"), context.get("show_value", True), "is invalid")


def rule_of(model: type[BaseModel], field: str) -> Rule | None:
    """The Rule a field of ``model`` is validated with, if any."""
    info = model.model_fields.get(field)
    return next((m for m in info.metadata if isinstance(m, Rule)), None) if info else None


def env_names(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> environment variable (its alias), for the fields that have one."""
    return {name: alias for name, info in model.model_fields.items() if (alias := _alias(info.validation_alias))}


def _alias(alias: object) -> str | None:
    return alias if isinstance(alias, str) else None
