"""EventBridge schedule expressions: validation, and the longest gap between two runs."""

from __future__ import annotations

import calendar
import math
import datetime as dt
import re
from dataclasses import dataclass

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

# (name, lowest, highest, names) for the six fields of an EventBridge cron expression.
_FIELDS = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)


LAST_DAY = 99  # stands for 'L' in day-of-month


class ScheduleError(ValueError):
    """A schedule expression EventBridge would reject; the message says what is wrong."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: '?'; 'L' is LAST_DAY, 'nW' taken as n
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # None: '?'; 1 = Sunday as in EventBridge
    years: frozenset[int]


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    number = names.get(token.upper()) if names else None
    if number is None:
        if not token.isdigit():
            raise ScheduleError(f"{field} field: {token!r} is not a number in {low}-{high}")
        number = int(token)
    if not low <= number <= high:
        raise ScheduleError(f"{field} field: {number} is outside {low}-{high}")
    return number


def _field(text: str, index: int) -> frozenset[int] | None:
    field, low, high, names = _FIELDS[index]
    if text == "?":
        if field not in ("day-of-month", "day-of-week"):
            raise ScheduleError(f"{field} field: '?' is only allowed for day-of-month or day-of-week")
        return None
    values: set[int] = set()
    for part in text.split(","):
        if field == "day-of-month" and part in ("L", "LW"):
            values.add(LAST_DAY)
            continue
        if field == "day-of-month" and part.endswith("W"):  # nearest weekday: close enough for gaps
            values.add(_value(part[:-1], low, high, {}, field))
            continue
        if field == "day-of-week" and ("#" in part or part.endswith("L")):
            day = part.split("#")[0].rstrip("L")
            values.add(_value(day, low, high, names, field))
            continue
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, low, high, names, field), _value(last, low, high, names, field)
            if start > end:
                raise ScheduleError(f"{field} field: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> Cron:
    """Parse ``cron(m h dom mon dow year)`` as EventBridge does; raise ScheduleError if invalid."""
    match = _CRON.match(expression)
    if not match:
        raise ScheduleError("a cron expression is written cron(minutes hours day-of-month month day-of-week year)")
    parts = match.group(1).split()
    if len(parts) != 6:
        raise ScheduleError(
            f"EventBridge cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {len(parts)}"
        )
    if (parts[2] == "?") == (parts[4] == "?"):
        raise ScheduleError("exactly one of day-of-month and day-of-week must be '?', e.g. cron(0 5 * * ? *)")
    fields = [_field(text, i) for i, text in enumerate(parts)]
    return Cron(*fields)  # type: ignore[arg-type]


def parse_rate_minutes(expression: str) -> int:
    """Minutes between runs of ``rate(N unit)``; raise ScheduleError if invalid."""
    match = _RATE.match(expression)
    if not match:
        raise ScheduleError("a rate expression is written rate(N minutes|hours|days), e.g. rate(12 hours)")
    number, unit = int(match.group(1)), match.group(2)
    if number < 1:
        raise ScheduleError("a rate must be at least 1")
    if (number == 1) != (not unit.endswith("s")):
        raise ScheduleError(f"write rate(1 {unit.rstrip('s')}) for one and rate(N {unit.rstrip('s')}s) for more")
    return number * _UNIT_MINUTES[unit.rstrip("s")]


def validate(expression: str) -> None:
    """Raise ScheduleError unless ``expression`` is an EventBridge cron or rate expression."""
    if expression.startswith("rate("):
        parse_rate_minutes(expression)
    else:
        parse_cron(expression)
        if longest_gap_minutes(expression) is None:
            raise ScheduleError("this cron expression never fires (checked over 2027-2028)")


def _fires_on(cron: Cron, day: dt.date) -> bool:
    if day.month not in cron.months or day.year not in cron.years:
        return False
    if cron.days_of_month is not None:
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day in cron.days_of_month or (LAST_DAY in cron.days_of_month and day.day == last)
    eventbridge_weekday = (day.isoweekday() % 7) + 1  # Sunday = 1
    return cron.days_of_week is not None and eventbridge_weekday in cron.days_of_week


def runs_per_year(expression: str) -> int:
    """How many times the schedule starts the job in a year (2027: fixed, so output is deterministic)."""
    if expression.startswith("rate("):
        return 365 * 24 * 60 // parse_rate_minutes(expression)
    cron = parse_cron(expression)
    days = sum(_fires_on(cron, dt.date(2027, 1, 1) + dt.timedelta(days=d)) for d in range(365))
    return days * len(cron.hours) * len(cron.minutes)


def longest_gap_minutes(expression: str, start: dt.date = dt.date(2027, 1, 1), days: int = 731) -> int | None:
    """The longest time between two consecutive runs over ``days`` from ``start`` (None if < 2 runs).

    The window is fixed, not today, so that synthesis stays deterministic.
    """
    if expression.startswith("rate("):
        return parse_rate_minutes(expression)
    cron = parse_cron(expression)
    times_of_day = sorted(h * 60 + m for h in cron.hours for m in cron.minutes)
    previous: int | None = None
    longest: int | None = None
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        if not _fires_on(cron, day):
            continue
        for minute in times_of_day:
            now = offset * 24 * 60 + minute
            if previous is not None:
                longest = max(longest or 0, now - previous)
            previous = now
    return longest


ALARM_WINDOW_MAX_MINUTES = 7 * 24 * 60  # CloudWatch: period x evaluation periods <= 7 days


def missed_run_window_minutes(schedule: str, timeout_minutes: int) -> int | None:
    """How long without a successful run before the missed-run alarm fires: the longest gap between
    two scheduled starts plus the run timeout, in whole hours; None when that exceeds CloudWatch's 7 days."""
    gap = longest_gap_minutes(schedule)
    assert gap is not None, "validated config always fires"
    window = math.ceil((gap + timeout_minutes) / 60) * 60
    return window if window <= ALARM_WINDOW_MAX_MINUTES else None
