"""issue 12: a verifier checks the aggregator's invalid claims (node/roles/verifier.py `judge`) on
real adapter files: confirmed claims approve, a claimed-invalid update that is valid rejects (the
aggregator lied), an unobtainable one abstains (a claim is never approved unchecked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import trio
from eth_account import Account
from test_parallel_fetch import FEDERATION, SETTINGS, _node

from chain.types import ChainParams, Phase, RoundInfo
from node.roles.aggregator import collect_updates, compute_aggregate
from node.roles.verifier import judge
from node.state import Commit, Submission
from training.adapter_io import update_metadata, write_canonical_adapter
from training.lora import initial_adapter_state
from training.models import build_tiny_model


def test_verifier_checks_every_invalid_claim(tmp_path: Path) -> None:
    model, _tok = build_tiny_model()
    node = _node(tmp_path / "verifier", bytes(Account.create().key), model)
    initial = node.artifacts.put_state(initial_adapter_state(model, SETTINGS, 11), "global", 0)
    node.store.set_meta("initial_sha256", initial)
    a, b, huge, copier, absent, rider = sorted(Account.create().address.lower() for _ in range(6))

    def update(member: str, shift: float) -> str:
        state = initial_adapter_state(model, SETTINGS, 11)
        state = {k: (v + np.float32(shift) if "lora_B" in k else v) for k, v in state.items()}
        folder = tmp_path / f"u-{member}"
        sha = write_canonical_adapter(
            state, SETTINGS, "medfed/tiny-llama", folder, update_metadata(member, 1, FEDERATION)
        )
        node.artifacts.import_file(sha, folder / "adapter_model.safetensors", "update", 1)
        return sha

    sha_a = update(a, 0.01)
    commits = [
        Commit(1, a, sha_a, "", 10),
        Commit(1, b, update(b, 0.02), "", 10),
        Commit(1, huge, update(huge, 1e30), "", 10),  # out of the federation's bounds
        Commit(1, copier, sha_a, "", 16),  # a's file names a, not the copier
        Commit(1, absent, "ab" * 32, "", 10),  # held by nobody here
        Commit(1, rider, update(rider, 0.0), "", 40),  # the start adapter sent back (issue 24)
    ]
    for c in commits:
        node.store.add_commit(c)
    # the chain's view of the attempt: past its hold cutoff, so a verifier does not fetch the
    # updates left out (the censorship check, node/censorship.py, is not what this test is about)
    node.memo.params = ChainParams(20, 20, 16, 3, 1, 10, 5, 1, False)
    node.to_unix = float
    now = int(node.now())
    info = RoundInfo(1, Phase.VERIFY, 0, len(commits), now - 40, now - 20, now + 60, None, 0, 0)

    async def chain(fn: Any, *args: Any) -> Any:
        return fn(*args)

    node.chain = chain
    node.client = SimpleNamespace(round_info=lambda: info)

    def aggregate_of(members: set[str]) -> str:
        async def go() -> list[Any]:
            return await collect_updates(
                node, 1, [c for c in commits if c.member in members], node.now() + 30
            )

        state = compute_aggregate(node, 1, trio.run(go))
        return str(node.artifacts.put_state(state, "aggregate", 1))

    def verdict(
        included: tuple[str, ...], invalid: tuple[str, ...], deadline_s: float = 30
    ) -> tuple[Any, str]:
        sub = Submission(1, 0, "0x" + "11" * 20, aggregate_of(set(included)), "", included, invalid)
        return trio.run(judge, node, sub, node.now() + deadline_s)

    # honest claims, checked and confirmed: approve
    ok, why = verdict((a, b), (huge, copier))
    assert ok is True and "2 invalid claims confirmed" in why
    # a valid update claimed invalid: the aggregator lied
    ok, why = verdict((a,), (b,))
    assert ok is False and f"update of {b} is claimed invalid but is valid" in why
    # issue 24: an update with no training must be named invalid, never included
    ok, why = verdict((a, b, rider), (huge, copier))
    assert ok is False and f"included update of {rider} is invalid" in why and "min_update_ratio" in why
    ok, why = verdict((a, b), (huge, copier, rider))
    assert ok is True and "3 invalid claims confirmed" in why
    # a claim on an update we cannot obtain: no vote (never approve an unchecked claim)
    node.host = object()  # fetching is attempted, and the deadline has passed already
    ok, why = verdict((a, b), (absent,), deadline_s=-1)
    assert ok is None and f"the invalid claim on {absent} cannot be checked yet" in why
    node.store.close()


def test_a_store_written_before_invalid_claims_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from node.state import StateStore

    coord, me = "0x" + "22" * 20, "0x" + "33" * 20
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.execute(
        "CREATE TABLE submissions (round INTEGER NOT NULL, attempt INTEGER NOT NULL, "
        "aggregator TEXT NOT NULL, sha256 TEXT NOT NULL, cid TEXT NOT NULL, included TEXT NOT NULL, "
        "PRIMARY KEY (round, attempt))"
    )
    db.execute("INSERT INTO submissions VALUES (1, 0, '0xa', 'ff', 'c', '0xb')")
    db.commit()
    db.close()
    s = StateStore(tmp_path, coord, me)
    assert s.submission(1, 0) == Submission(1, 0, "0xa", "ff", "c", ("0xb",), ())
    s.add_submission(Submission(2, 0, "0xa", "ee", "c", ("0xb",), ("0xc",)))
    assert s.submission(2, 0) is not None and s.submission(2, 0).invalid == ("0xc",)  # type: ignore[union-attr]
    s.record_aggregate(2, 0, "ee", ["0xb"], ["0xc"])
    assert s.aggregate_invalid(2, 0) == ["0xc"] and s.aggregate(2, 0) == ("ee", ["0xb"], False)
    s.close()
