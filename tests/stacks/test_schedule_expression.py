"""EventBridge schedule expressions: what fires when, as the alarm window and the cost estimate see it."""

from __future__ import annotations

import pytest

from stacks.schedule_expression import (
    ScheduleError,
    longest_gap_minutes,
    missed_run_window_minutes,
    runs_per_year,
    validate,
)

DAY = 24 * 60


@pytest.mark.parametrize(
    ("expression", "runs", "gap"),
    [
        ("cron(0 5 * * ? *)", 365, DAY),
        ("rate(12 hours)", 730, 12 * 60),
        ("rate(1 day)", 365, DAY),
        ("cron(0/15 * * * ? *)", 365 * 96, 15),
        ("cron(0 8,17 ? * MON-FRI *)", 261 * 2, 2 * DAY + 15 * 60),  # Friday 17:00 to Monday 08:00
        ("cron(0 5 ? * MON-FRI *)", 261, 3 * DAY),
        ("cron(0 5 1 * ? *)", 12, 31 * DAY),
        ("cron(0 5 L * ? *)", 12, 31 * DAY),  # last day of the month: Jan 31 -> Feb 28/29 -> ... Jul 31 -> Aug 31
        ("cron(0 5 ? * 2#1 *)", 12, 35 * DAY),  # first Monday of the month
        ("cron(0 5 ? * 6L *)", 12, 35 * DAY),  # last Friday of the month
        ("cron(0 5 ? * L *)", 52, 7 * DAY),  # 'L' alone: the last day of the week, Saturday
        ("cron(30 6 ? JAN,JUL MON *)", 8, None),  # Mondays of January and July 2027: 4 + 4
    ],
)
def test_runs_per_year_and_longest_gap(expression: str, runs: int, gap: int | None) -> None:
    validate(expression)
    assert runs_per_year(expression) == runs
    if gap is not None:
        assert longest_gap_minutes(expression) == gap


def test_a_one_time_schedule_is_valid_and_has_no_gap() -> None:
    validate("cron(0 5 1 1 ? 2027)")
    assert longest_gap_minutes("cron(0 5 1 1 ? 2027)") is None
    assert missed_run_window_minutes("cron(0 5 1 1 ? 2027)", 60) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 5 1 1 ? 2001)", "never fires"),
        ("cron(0 5 30 2 ? *)", "never fires"),
        ("cron(0 5 ? * 2#6 *)", "week of the month must be 1-5"),
        ("cron(0 5 ? * 9 *)", "9 is outside 1-7"),
        ("cron(0 5 ? * MON-SUN *)", "runs backwards"),
        ("cron(0/0 5 * * ? *)", "positive number"),
        ("cron(0 5 * ? ? *)", "'?' is only allowed for day-of-month or day-of-week"),
        ("cron(0 5 ? * ? *)", "exactly one of"),
    ],
)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate(expression)
