"""Suite-wide: the longest tests are collected first, so that with `make test`'s pytest-xdist
workers (`--dist loadfile --no-loadscope-reorder`: files handed out in collection order) they
start at once instead of becoming the run's tail."""

from __future__ import annotations

import pytest

# Files whose tests mostly wait (an idle real chain, deadlines), longest first.
START_FIRST = (
    "tests/e2e/test_cypherium_idle.py",
    "tests/e2e/test_federation.py",
    "tests/e2e/test_cypherium.py",
    "tests/e2e/test_blind_approval_and_late_restart.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return START_FIRST.index(path) if path in START_FIRST else len(START_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its order
