"""The way back from a poisoned global adapter: every member derives the round's effective base
from the chain's round outcomes alone (node/recovery.py)."""

from __future__ import annotations

from pathlib import Path

from node.recovery import lineage
from node.state import Outcome, StateStore

INIT = "00" * 32


def _store(tmp_path: Path, outcomes: list[str]) -> StateStore:
    s = StateStore(tmp_path, "0x" + "11" * 20, "0x" + "22" * 20)
    for r, what in enumerate(outcomes, start=1):
        if what == "F":
            s.set_outcome(Outcome(r, "failed", 2, "", "", "too few commits"))
        else:
            s.set_outcome(Outcome(r, "finalized", 0, what * 64, "", ""))
    return s


def test_finalized_rounds_build_on_each_other(tmp_path: Path) -> None:
    s = _store(tmp_path, ["a", "b"])
    assert lineage(s, INIT, 1, 2) == [INIT]
    assert lineage(s, INIT, 3, 2)[-1] == "b" * 64
    s.close()


def test_after_fallback_after_failed_rounds_the_parent_is_the_base_again(tmp_path: Path) -> None:
    # round 2 finalized a poisoned global "p"; rounds 3 and 4 failed (nobody could train on it)
    s = _store(tmp_path, ["a", "p", "F", "F", "c", "F", "F", "F", "F"])
    assert lineage(s, INIT, 4, 2)[-1] == "p" * 64  # one failure: keep trying
    assert lineage(s, INIT, 5, 2)[-1] == "a" * 64  # two in a row: back to round 1's global
    assert lineage(s, INIT, 6, 2) == [INIT, "a" * 64, "c" * 64]  # round 5 built on the healthy one
    assert lineage(s, INIT, 8, 2)[-1] == "a" * 64  # c abandoned in turn
    assert lineage(s, INIT, 10, 2) == [INIT]  # down to the initial adapter, never below
    assert lineage(s, INIT, 10, 0)[-1] == "c" * 64  # fallback_after = 0: never fall back
    s.close()
