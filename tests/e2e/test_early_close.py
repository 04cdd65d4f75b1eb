"""End to end: rounds move as soon as their outcome is decided. Three `medfed-node` processes on the
tiny model, a real anvil and real libp2p hosts, with a commit phase far longer than the work: the
last member's commit closes the phase (its block's hash seeds the election, in the next
transaction), updates are served and fetched, verified and finalized, and the next round opens,
all long before the first round's commit deadline."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_kit import expected_rewards, history, paid, run

from chain import types as ev
from localnet.federation import down, write_summary

pytestmark = pytest.mark.slow
COMMIT_S = 240  # the safety net; an honest federation never waits for it


def test_rounds_finish_long_before_the_commit_deadline(tmp_path: Path) -> None:
    fed, done = run(tmp_path / "fed", 3, 2, {}, restart_crashed=False, timeout_s=COMMIT_S, commit_s=COMMIT_S)
    try:
        assert done == {1: "finalized", 2: "finalized"}
        h = history(fed)
        client = fed.client()

        def at(e: ev.ChainEvent) -> float:
            return client.chain_to_seconds(int(client.w3.eth.get_block(e.block_number)["timestamp"]))

        for r in (1, 2):
            (opened,) = h.of(ev.RoundOpened, r)
            commits = h.of(ev.UpdateCommitted, r)
            (elected,) = h.of(ev.AggregatorElected, r)
            assert len(commits) == 3
            # the last commit closes the phase; the election (seeded by that block's hash) is in a
            # later block, sent at once by the closer (or within a poll by the others' nudge)
            assert elected.block_number > commits[-1].block_number
            assert at(elected) - at(commits[-1]) < 10.0, f"round {r}: the election waited"
            final = h.final(r)
            deadline = client.chain_to_seconds(opened.commit_deadline)
            assert at(final) < deadline - COMMIT_S / 2, f"round {r} waited for its commit deadline"
        (opened2,) = h.of(ev.RoundOpened, 2)
        assert at(opened2) < client.chain_to_seconds(h.of(ev.RoundOpened, 1)[0].commit_deadline)
        assert paid(h) == expected_rewards(h)
        summary = write_summary(fed)
        for r in summary["rounds"]:
            assert r["wall_s"] < COMMIT_S / 2
    finally:
        down(fed.dir)
