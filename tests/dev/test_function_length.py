"""The function-length gate of `make lint`, run as `make lint` runs it, on files made here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _function(name: str, lines: int) -> str:
    """Source of a function exactly `lines` lines long, def line included."""
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 2))
    return f"def {name}():\n{body}    return 0\n"


def _check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dev.function_length", *map(str, paths)], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_a_function_of_51_lines_fails_naming_file_line_and_length(tmp_path: Path) -> None:
    source = tmp_path / "long.py"
    # Line 1 an import, 4-53 a function that fits, 56 the class, 57 the method that does not.
    source.write_text("import os\n\n\n" + _function("fits", 50) + "\n\nclass C:\n    " + _function("too_long", 51).replace("\n", "\n    "))
    result = _check(source)
    assert result.returncode == 1
    assert result.stderr == f"{source}:57: too_long is 51 lines long (max 50); split it into named steps\n"


def test_functions_of_50_lines_pass_in_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(_function("a", 50))
    (tmp_path / "b.py").write_text("async " + _function("b", 50))
    result = _check(tmp_path / "pkg", tmp_path / "b.py")
    assert (result.returncode, result.stderr) == (0, "")
