"""Integration tests: the job's image built and run with Docker, and the stack's integrations on a local AWS.

Every test under this folder is marked ``integration``: `make integration` runs them, `make test` does not.
"""

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.integration)
