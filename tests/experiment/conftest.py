"""One ``medfed-experiment --quick`` run (local backend) shared by the experiment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.experiment.cli import main


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir of ``medfed-experiment --quick`` with the local backend, 1 torch thread."""
    out = tmp_path_factory.mktemp("experiment") / "run"
    assert main(["--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out
