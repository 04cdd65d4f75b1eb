"""Fixtures of the explorer tests: a real anvil with a scripted federation, the explorer, Chromium."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from explorer_browser import chromium_path, launch_browser
from explorer_scenario import Scenario, build_federation

from localnet.anvil import start_anvil, stop_anvil
from node.explorer.server import ExplorerHandle, start_explorer

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """3 institutions; round 1 finalized, round 2 failed (rejected, then timeout), round 3 finalized
    on its second attempt. Session-wide and never modified by a test."""
    tmp = tmp_path_factory.mktemp("explorer-devnet")
    anvil = start_anvil(tmp / "anvil.log")
    try:
        yield build_federation(anvil.rpc_url, tmp / "files", 3, ("ok", "fail", "retry_ok"))
    finally:
        stop_anvil(anvil.pid)


@pytest.fixture(scope="session")
def explorer(federation: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExplorerHandle]:
    """The explorer serving `federation`, fully indexed before the first test uses it."""
    db = tmp_path_factory.mktemp("explorer-db") / "explorer.sqlite"
    with start_explorer(federation.rpc_url, federation.coordinator, db, port=0, poll_s=0.2) as handle:
        handle.indexer.sync_once()
        yield handle


@pytest.fixture()
def fresh_devnet(tmp_path: Path) -> Iterator[Scenario]:
    """A private anvil with one finalized round, for tests that add blocks."""
    anvil = start_anvil(tmp_path / "anvil.log")
    try:
        yield build_federation(anvil.rpc_url, tmp_path / "files", 3, ("ok",))
    finally:
        stop_anvil(anvil.pid)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never downloads a browser)."""
    if os.environ.get("MEDFED_NO_BROWSER") == "1":
        pytest.skip("MEDFED_NO_BROWSER=1: browser tests skipped on request")
    if chromium_path() is None:
        pytest.fail("chromium not installed: apt-get install chromium (scripts/bootstrap.sh system does it)")
    with launch_browser() as b:
        yield b


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """test-artifacts/ (gitignored): screenshots the tests leave behind."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
