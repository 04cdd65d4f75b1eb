"""State store: a node reopened after a kill sees exactly what it recorded, and refuses a foreign store."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import StateError
from node.state import StateStore

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_update_commit_vote_survive_reopen(tmp_path: Path) -> None:
    s = StateStore(tmp_path, COORD, ADDR)
    s.record_update(1, "ab" * 32, 40, 3.5)
    s.record_vote(1, 0, True, "sha matches")
    s.set_last_block(12)
    s.close()

    s = StateStore(tmp_path, COORD, ADDR)
    up = s.update(1)
    assert up is not None and up.sha256 == "ab" * 32 and up.num_samples == 40 and not up.committed
    s.mark_committed(1, "0xtx")
    v = s.vote(1, 0)
    assert v is not None and v.approve and not v.sent
    # a second verdict for the same attempt never replaces the first (no double vote, even a different one)
    s.record_vote(1, 0, False, "changed mind")
    v = s.vote(1, 0)
    assert v is not None and v.approve
    s.mark_vote_sent(1, 0, "0xv")
    assert s.last_block == 12
    s.set_last_block(5)
    assert s.last_block == 12
    s.close()

    s = StateStore(tmp_path, COORD, ADDR)
    up = s.update(1)
    assert up is not None and up.committed and up.tx == "0xtx"
    v = s.vote(1, 0)
    assert v is not None and v.sent
    assert s.update(2) is None and s.vote(1, 1) is None


def test_artifacts_and_metrics(tmp_path: Path) -> None:
    s = StateStore(tmp_path, COORD, ADDR)
    f = tmp_path / "a.safetensors"
    f.write_bytes(b"x" * 10)
    s.add_artifact("cd" * 32, f, "update", 1)
    assert s.artifact("cd" * 32) == f
    f.unlink()
    assert s.artifact("cd" * 32) is None  # a file deleted behind our back is not "held"
    s.record_metrics(0, "ee" * 32, 0.25, 100, "ff" * 32)
    s.record_aggregate(1, 0, "11" * 32, ["0xa", "0xb"])
    assert s.aggregate(1, 0) == ("11" * 32, ["0xa", "0xb"], False)
    s.mark_aggregate_submitted(1, 0, None)
    assert s.aggregate(1, 0) == ("11" * 32, ["0xa", "0xb"], True)
    m = s.metrics(0)
    assert m is not None and m.accuracy == 0.25 and not m.reported


def test_store_of_another_federation_or_wallet_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path, COORD, ADDR).close()
    with pytest.raises(StateError, match="belongs to coordinator"):
        StateStore(tmp_path, "0x" + "1" * 40, ADDR)
    with pytest.raises(StateError, match="belongs to address"):
        StateStore(tmp_path, COORD, "0x" + "2" * 40)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StateError, match="not a medfed state store"):
        StateStore(tmp_path, COORD, ADDR)
