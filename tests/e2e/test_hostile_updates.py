"""End to end: dishonest members in a live federation (separate `medfed-node start` processes,
real anvil chain, real libp2p, tiny model) commit hostile updates; the others hold.

- B1 `pad-update`: valid tensors followed by 40 MiB of trailing bytes (under the 512 MiB size
  limit). Honest nodes must refuse it early (the transfer stops at the size an update of this
  federation can have), leave it out, pay its author no contributor reward, and the next round
  must finalize with everyone. Its bytes never arrive, so nobody can prove them invalid: it is
  excluded as UNAVAILABLE and keeps its verifier (or aggregator) reward for honest work that
  round; it gains nothing over honest behaviour (docs/threat-model.md).
- B2 `huge-update`: finite but huge values (every LoRA B value 1e30). Honest nodes must leave it
  out by the federation's bounds (fixed in its on-chain config hash), name it INVALID on-chain
  (verifiers check the claim), pay its author exactly nothing that round (no contributor,
  verifier or aggregator reward), keep the global adapter healthy, and the next round must
  finalize with everyone.

Both attackers share one federation (their outcomes are told apart by member).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_kit import (
    REWARDS,
    expected_rewards,
    expected_round_rewards,
    history,
    log_text,
    node_index,
    paid,
    run,
)

from chain import types as ev
from localnet.federation import down

pytestmark = pytest.mark.slow
C, A, V = REWARDS


def _contributors(h, round: int) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.to.lower() for p in h.of(ev.RewardPaid, round) if p.role == "contributor"}


def test_padded_and_huge_updates_are_left_out_the_huge_one_unpaid(tmp_path: Path) -> None:
    faults = {1: "pad-update@1", 2: "huge-update@1"}
    fed, done = run(tmp_path / "fed", 3, 2, faults, restart_crashed=False, timeout_s=300)
    try:
        h = history(fed)
        assert "TEST FAULT pad-update" in log_text(fed, 1)
        assert "TEST FAULT huge-update" in log_text(fed, 2)
        assert done == {1: "finalized", 2: "finalized"}, [(f.round, f.reason) for f in h.of(ev.RoundFailed)]
        client = fed.client()
        members = [a.lower() for a in fed.devnet.addresses]
        honest, padder, huge = members
        (padded,) = [c for c in h.of(ev.UpdateCommitted, 1) if c.member.lower() == padder]
        padded_sha = bytes(padded.sha256).hex()

        # round 1: both hostile updates are left out; the huge one is named invalid on-chain,
        # the padded one (never downloaded, so unproven) is only unavailable
        final1 = h.final(1)
        sub1 = h.submission(1, final1.attempt)
        agg = sub1.aggregator.lower()
        assert [a.lower() for a in sub1.included] == [honest]
        assert [a.lower() for a in sub1.invalid] == [huge]
        excluded = {e.member.lower(): (e.reason, e.aggregator.lower()) for e in h.of(ev.UpdateExcluded, 1)}
        assert excluded == {padder: ("unavailable", agg), huge: ("invalid", agg)}
        # ... for the right reasons: the aggregator says why
        text = log_text(fed, node_index(fed, agg))
        assert "too_large" in text or "too large" in text
        assert "exceeds the federation's bound" in text
        # ... and nobody but the padder holds the 40 MiB file
        for i in (0, 2):
            assert f"holding update {padded_sha[:12]}" not in log_text(fed, i)
        # who was paid what in round 1: the huge updater exactly nothing, whatever its role; the
        # padder what its honest work earned (verifier, or aggregator), no contributor reward
        got = paid(h, 1)
        assert got == {a: x for (r, a), x in expected_round_rewards(h).items() if r == 1}
        assert got.get(huge, 0) == 0
        assert got[honest] == C + (A if agg == honest else V)
        assert got.get(padder, 0) == (A if agg == padder else V)
        assert _contributors(h, 1) == {honest}
        # verifiers checked the invalid claim and approved
        votes = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, 1) if v.attempt == final1.attempt}
        assert votes and all(votes.values())

        # the global adapter stayed healthy: every member trained on it and round 2 took everyone
        final2 = h.final(2)
        sub2 = h.submission(2, final2.attempt)
        assert sorted(a.lower() for a in sub2.included) == sorted(members) and sub2.invalid == ()
        assert _contributors(h, 2) == set(members)
        for i in range(3):
            assert "diverged" not in log_text(fed, i)
        # rewards follow the rules exactly (chain events == token balances)
        expected = expected_rewards(h)
        assert paid(h) == expected
        for a in members:
            assert client.token_balance(a) == expected.get(a, 0)
    finally:
        down(fed.dir)


def test_a_poisoned_global_that_got_through_is_abandoned_and_the_federation_recovers(
    tmp_path: Path,
) -> None:
    """The way back: a federation deployed with its bounds switched off lets the 1e30 update in;
    nobody can train on that global (round 2 fails, each member naming the poisoned global, not
    the learning rate), and with fallback_after = 1 round 3 starts again from the last healthy
    global (here the initial adapter) and finalizes with everyone, without any contract change."""
    import numpy as np

    from training.adapter_io import read_adapter
    from training.bounds import NO_BOUNDS, FederationRules

    rules = FederationRules(bounds=NO_BOUNDS, fallback_after=1)
    fed, done = run(
        tmp_path / "fed", 3, 3, {2: "huge-update@1"}, restart_crashed=False, timeout_s=300, rules=rules
    )
    try:
        assert done == {1: "finalized", 2: "failed", 3: "finalized"}
        h = history(fed)
        members = [a.lower() for a in fed.devnet.addresses]
        # without bounds the poison got in (this is what the bounds of the other tests prevent)
        assert members[2] in [a.lower() for a in h.submission(1, h.final(1).attempt).included]
        (failed,) = h.of(ev.RoundFailed, 2)
        assert failed.reason == "too few commits"
        for i in range(3):
            text = log_text(fed, i)
            assert "the global adapter it started from is likely poisoned" in text
            assert "training from the last healthy global adapter" in text
        # round 3 was built on the healthy initial adapter and is healthy itself
        final3 = h.final(3)
        assert sorted(a.lower() for a in h.submission(3, final3.attempt).included) == sorted(members)
        g3 = bytes(final3.global_sha256).hex()
        state = read_adapter(fed.state_dirs[0] / "adapters" / g3)
        assert max(float(np.max(np.abs(v))) for v in state.values()) < 10.0
        assert bytes(fed.client().global_adapter().sha256).hex() == g3
        assert paid(h) == expected_rewards(h)
    finally:
        down(fed.dir)
