"""Unit tests for the default transform (the tutorial's rule)."""

from etl_job.transform import transform


def test_doe_becomes_das():
    assert transform({"id": 1, "name": "John Doe"}) == {"id": 1, "name": "John Das"}
    assert transform({"id": 2, "name": "Doe, Jane Doe"}) == {"id": 2, "name": "Das, Jane Das"}


def test_other_rows_are_unchanged():
    for row in ({"id": 1, "name": "Jane Roe"}, {"id": 2, "name": None}, {"id": 3}, {"id": 4, "name": "doe"}):
        assert transform(dict(row)) == row


def test_the_input_row_is_not_modified():
    row = {"id": 1, "name": "John Doe"}
    transform(row)
    assert row == {"id": 1, "name": "John Doe"}
