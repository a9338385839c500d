"""Normalized templates for offline review: `python -m ops.review normalize SRC DST`.

A committed, normalized template per stage (review/) lets a reviewer read infrastructure changes in
the pull request and lets `make diff` run `cdk diff` with no AWS account. The only normalization is
the asset hash: it changes with every edit under etl_job/, which the code diff already shows.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from stacks import limits

REVIEW_DIR = Path(__file__).resolve().parent.parent / "review"
STAGES = ("dev", "prod")
ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")
STABLE_HASH = "0" * 64  # keeps the shape of a hash so the template still reads as CloudFormation
REFRESH_COMMAND = "make review-templates"


def normalize(template: dict) -> str:
    """The template as committed: stable asset hashes, sorted keys, one trailing newline."""
    text = json.dumps(template, indent=1, sort_keys=True)
    return ASSET_HASH.sub(STABLE_HASH, text) + "\n"


def review_path(stage: str) -> Path:
    return REVIEW_DIR / f"{limits.STACK_NAME_PREFIX}-{stage}.template.json"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "normalize":
        print("usage: python -m ops.review normalize SYNTHESIZED_TEMPLATE DESTINATION", file=sys.stderr)
        return 2
    source, destination = Path(argv[1]), Path(argv[2])
    if not source.is_file():
        print(f"error: {source} does not exist: synthesize first (make synth)", file=sys.stderr)
        return 2
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(normalize(json.loads(source.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
