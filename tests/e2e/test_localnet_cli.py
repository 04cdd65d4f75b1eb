"""`medfed-localnet up` / `status` / `down` as a user runs them: one node, one round, tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_up_writes_summary_and_down_stops_everything(tmp_path: Path) -> None:
    d = tmp_path / "fed"
    up = _cli("up", "--nodes", "1", "--rounds", "1", "--model", "tiny", "--dir", str(d))
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert "Macro" in up.stdout and "medfed-localnet down --dir" in up.stdout
        summary = json.loads((d / "summary.json").read_text())
        assert list(summary["base"]["accuracy"]) == ["medqa-mainland"]
        (r1,) = summary["rounds"]
        assert r1["round"] == 1 and r1["attempts"] == 1 and len(r1["global_sha256"]) == 64
        assert list(r1["rewards"].values()) == [10 * 10**18 + 5 * 10**18]  # contributor + aggregator
        procs = json.loads((d / "processes.json").read_text())
        status = _cli("status", "--dir", str(d), timeout=60)
        assert status.returncode == 0 and "node 0" in status.stdout
    finally:
        down = _cli("down", "--dir", str(d), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "anvil" in down.stdout
    for pid in [procs["anvil"], procs.get("explorer"), *procs["nodes"].values()]:
        if pid:
            assert not _alive(int(pid)), f"pid {pid} still running after down"
    again = _cli("down", "--dir", str(d), timeout=60)
    assert again.returncode == 0 and "nothing was running" in again.stdout
