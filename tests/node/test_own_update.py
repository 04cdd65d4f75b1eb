"""A node checks its own update exactly as it checks everyone else's: a bad own update is never
committed (one log line, not one per tick), and as aggregator it leaves its own bad update out
with the reason instead of failing in a loop. Real adapter files and state store."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from eth_account import Account
from test_ipfs_fallback import SETTINGS, _node

from node.roles.aggregator import collect_updates
from node.roles.participant import _own_update_valid
from node.state import Commit
from training.adapter_io import update_metadata, write_canonical_adapter
from training.lora import initial_adapter_state


def _with_initial(node: Any) -> Any:
    """Hold the federation's initial adapter: round 1's reference for the bounds."""
    sha = node.artifacts.put_state(initial_adapter_state(node._model, SETTINGS, 0), "global", 0)
    node.store.set_meta("initial_sha256", sha)
    return node


def _store_update(node: Any, tmp_path: Path, poison: float | None, author: str = "0x" + "11" * 20) -> Any:
    """A round-1 update by ``author`` (bound to it, the round and the federation, issue 12 B6)."""
    state = initial_adapter_state(node._model, SETTINGS, 3)
    if poison is not None:
        key = sorted(k for k in state if "lora_B" in k)[0]
        state[key] = state[key].copy()
        state[key][0, 0] = np.float32(poison)
    out = tmp_path / f"update-{author[-4:]}-{poison}"
    meta = update_metadata(author, 1, node.federation_id)
    sha = write_canonical_adapter(state, SETTINGS, "medfed/tiny-llama", out, meta)
    node.artifacts.adopt_dir(sha, out, "update", 1)
    node.store.record_update(1, sha, 16, 1.0)
    return node.store.update(1)


@pytest.mark.parametrize(("poison", "reason"), [(float("nan"), "NaN or Inf"), (1e30, "max_abs")])
def test_bad_own_update_is_not_committed_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, poison: float, reason: str
) -> None:
    node: Any = _with_initial(_node(tmp_path, "", bytes(Account.create().key)))
    rec = _store_update(node, tmp_path, poison)
    with caplog.at_level(logging.INFO):
        assert trio.run(_own_update_valid, node, 1, rec) is False
        assert trio.run(_own_update_valid, node, 1, rec) is False  # the next tick: silent
    lines = [r.getMessage() for r in caplog.records if "NOT committing" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0], lines
    assert not any(r.exc_info for r in caplog.records)
    node.store.close()


def test_good_own_update_passes_and_a_bad_one_is_left_out_by_its_own_aggregator(tmp_path: Path) -> None:
    node: Any = _with_initial(_node(tmp_path, "", bytes(Account.create().key)))
    other = "0x" + "22" * 20
    rec = _store_update(node, tmp_path, None, other)
    assert trio.run(_own_update_valid, node, 1, rec) is True

    me = "0x" + "11" * 20
    bad = _store_update(node, tmp_path, float("nan"), me)
    commits = [Commit(1, me, bad.sha256, "", 16), Commit(1, other, rec.sha256, "", 16)]
    got = trio.run(collect_updates, node, 1, commits, time.time() + 5)
    assert got[0].path is None and "NaN or Inf" in got[0].problem
    assert got[1].path is not None and got[1].problem == ""
    node.store.close()
