"""EventBridge schedule expressions: validation, how often they fire, and the longest gap between runs."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass

_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")  # fullmatch
_CRON = re.compile(r"cron\((.*)\)")  # fullmatch
_UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_SATURDAY = 7

# (name, lowest, highest, names) for the six fields of an EventBridge cron expression.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)

# Fixed windows, not today's date, so that synthesis stays deterministic.
WINDOW_START = dt.date(2026, 1, 1)
WINDOW_DAYS = 3 * 365 + 1  # 2026-2028
COST_YEAR = 2027
ALARM_WINDOW_MAX_MINUTES = 7 * 24 * 60  # CloudWatch: period x evaluation periods <= 7 days

LAST = "L"
# A day-of-month value is a day number, or LAST for 'L' ('nW', nearest weekday, is taken as n).
# A day-of-week value is a day number (1 = Sunday), (day, n) for 'day#n', or (day, LAST) for 'dayL'.
DayOfWeek = int | tuple


class ScheduleError(ValueError):
    """A schedule expression EventBridge would reject; the message says what is wrong."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset
    hours: frozenset
    days_of_month: frozenset | None  # None: '?'
    months: frozenset
    days_of_week: frozenset | None  # None: '?'
    years: frozenset


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    number = names.get(token.upper()) if names else None
    if number is None:
        if not token.isdigit():
            raise ScheduleError(f"{field} field: {token!r} is not a number in {low}-{high}")
        number = int(token)
    if not low <= number <= high:
        raise ScheduleError(f"{field} field: {number} is outside {low}-{high}")
    return number


def _special(part: str, field: str, low: int, high: int, names: dict[str, int]) -> object | None:
    """The value of an 'L', 'W' or '#' token, or None if ``part`` is an ordinary one."""
    if field == "day-of-month":
        if part in ("L", "LW"):
            return LAST
        if part.endswith("W"):
            return _value(part[:-1], low, high, {}, field)
    if field == "day-of-week":
        if part == "L":
            return _SATURDAY  # the last day of the week
        if part.endswith("L"):
            return (_value(part[:-1], low, high, names, field), LAST)
        if "#" in part:
            day, _, nth = part.partition("#")
            if nth not in ("1", "2", "3", "4", "5"):
                raise ScheduleError(f"{field} field: in {part!r} the week of the month must be 1-5")
            return (_value(day, low, high, names, field), int(nth))
    return None


def _day_field(text: str, index: int) -> frozenset | None:
    """Day-of-month or day-of-week: '?' (None) or values."""
    return None if text == "?" else _field(text, index)


def _field(text: str, index: int) -> frozenset:
    field, low, high, names = _FIELDS[index]
    if text == "?":
        raise ScheduleError(f"{field} field: '?' is only allowed for day-of-month or day-of-week")
    values: set = set()
    for part in text.split(","):
        special = _special(part, field, low, high, names)
        if special is not None:
            values.add(special)
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
    match = _CRON.fullmatch(expression)
    if not match:
        raise ScheduleError("a cron expression is written cron(minutes hours day-of-month month day-of-week year)")
    parts = match.group(1).split()
    if len(parts) != 6:
        raise ScheduleError(
            f"EventBridge cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {len(parts)}"
        )
    if (parts[2] == "?") == (parts[4] == "?"):
        raise ScheduleError("exactly one of day-of-month and day-of-week must be '?', e.g. cron(0 5 * * ? *)")
    minutes, hours, days_of_month, months, days_of_week, years = parts
    return Cron(_field(minutes, 0), _field(hours, 1), _day_field(days_of_month, 2), _field(months, 3),
                _day_field(days_of_week, 4), _field(years, 5))


def parse_rate_minutes(expression: str) -> int:
    """Minutes between runs of ``rate(N unit)``; raise ScheduleError if invalid."""
    match = _RATE.fullmatch(expression)
    if not match:
        raise ScheduleError("a rate expression is written rate(N minutes|hours|days), e.g. rate(12 hours)")
    number, unit = int(match.group(1)), match.group(2)
    if number < 1:
        raise ScheduleError("a rate must be at least 1")
    if (number == 1) != (not unit.endswith("s")):
        raise ScheduleError(f"write rate(1 {unit.rstrip('s')}) for one and rate(N {unit.rstrip('s')}s) for more")
    return number * _UNIT_MINUTES[unit.rstrip("s")]


def _weekday_matches(value: DayOfWeek, day: dt.date, last_day_of_month: int) -> bool:
    weekday = (day.isoweekday() % 7) + 1  # EventBridge: Sunday = 1
    if isinstance(value, int):
        return weekday == value
    wanted, which = value
    if weekday != wanted:
        return False
    return day.day + 7 > last_day_of_month if which == LAST else (day.day - 1) // 7 + 1 == which


def _fires_on(cron: Cron, day: dt.date) -> bool:
    if day.month not in cron.months or day.year not in cron.years:
        return False
    last = calendar.monthrange(day.year, day.month)[1]
    if cron.days_of_month is not None:
        return day.day in cron.days_of_month or (LAST in cron.days_of_month and day.day == last)
    return any(_weekday_matches(value, day, last) for value in cron.days_of_week or ())


def _firing_days(cron: Cron, start: dt.date, days: int) -> list[int]:
    return [offset for offset in range(days) if _fires_on(cron, start + dt.timedelta(days=offset))]


def validate(expression: str) -> None:
    """Raise ScheduleError unless ``expression`` is an EventBridge cron or rate expression that fires."""
    if expression.startswith("rate("):
        parse_rate_minutes(expression)
    elif not _firing_days(parse_cron(expression), WINDOW_START, WINDOW_DAYS):
        raise ScheduleError(f"this cron expression never fires (checked over {WINDOW_START.year}-{WINDOW_START.year + 2})")


def runs_per_year(expression: str) -> int:
    """How many times the schedule starts the job in a year (COST_YEAR)."""
    if expression.startswith("rate("):
        return 365 * 24 * 60 // parse_rate_minutes(expression)
    cron = parse_cron(expression)
    return len(_firing_days(cron, dt.date(COST_YEAR, 1, 1), 365)) * len(cron.hours) * len(cron.minutes)


def _gaps_minutes(expression: str) -> list[int]:
    """Every distinct time between two consecutive runs within the window."""
    if expression.startswith("rate("):
        return [parse_rate_minutes(expression)]
    cron = parse_cron(expression)
    times = sorted(h * 60 + m for h in cron.hours for m in cron.minutes)
    days = _firing_days(cron, WINDOW_START, WINDOW_DAYS)
    within_day = {b - a for a, b in zip(times, times[1:])} if days else set()
    between_days = {(b * 1440 + times[0]) - (a * 1440 + times[-1]) for a, b in zip(days, days[1:])}
    return sorted(within_day | between_days)


def longest_gap_minutes(expression: str) -> int | None:
    """The longest time between two consecutive runs within the window (None if it runs less than twice)."""
    return max(_gaps_minutes(expression), default=None)


def shortest_gap_minutes(expression: str) -> int | None:
    """The shortest time between two consecutive runs within the window (None if it runs less than twice)."""
    return min(_gaps_minutes(expression), default=None)


def missed_run_window_minutes(schedule: str, timeout_minutes: int) -> int | None:
    """How long without a successful run before the missed-run alarm fires: the longest gap between
    two scheduled starts plus the run timeout, in whole hours; None when the schedule runs less than
    twice, or when that exceeds the 7 days CloudWatch can look back."""
    gap = longest_gap_minutes(schedule)
    if gap is None:
        return None
    window = math.ceil((gap + timeout_minutes) / 60) * 60
    return window if window <= ALARM_WINDOW_MAX_MINUTES else None
