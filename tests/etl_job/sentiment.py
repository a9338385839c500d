"""A transform that adds columns, as one calling an NLP API would; its own module, for its OUTPUT_COLUMNS."""

from etl_job.transform import transform as default_transform

OUTPUT_COLUMNS = {"sentiment": "FLOAT64", "name_length": "INT64"}


def transform(row: dict) -> dict:
    """The default transform, plus a stand-in sentiment score and the name's length."""
    out = default_transform(row)
    return {**out, "sentiment": 0.5 if "Das" in out["name"] else -0.25, "name_length": len(out["name"])}


def bad_length(row: dict) -> dict:
    """Like ``transform``, but puts a string in the INT64 column name_length for ids divisible by 7."""
    out = transform(row)
    return {**out, "name_length": "n/a"} if row["id"] % 7 == 0 else out
