"""Fail on functions longer than 50 lines: `python -m dev.function_length [PATH ...]` (part of `make lint`).

Ruff has no rule for a function's length in lines (PLR0915 counts statements), hence this small check.
A function's length runs from its `def` line to its last line, docstring and comments included.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 50
DEFAULT_PATHS = ("app.py", "stacks", "etl_job", "ops", "dev", "tests")


def python_files(paths: list[str]) -> Iterator[Path]:
    """The .py files named or found under the folders named, in a stable order."""
    for name in paths:
        path = Path(name)
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def long_functions(path: Path, max_lines: int) -> Iterator[str]:
    """One message per function of the file longer than max_lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > max_lines:
                yield f"{path}:{node.lineno}: {node.name} is {lines} lines long (max {max_lines}); split it into named steps"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.function_length", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS), help="files or folders (default: all the project's code)")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    args = parser.parse_args(argv)
    found = [message for path in python_files(args.paths) for message in long_functions(path, args.max_lines)]
    for message in found:
        print(message, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
