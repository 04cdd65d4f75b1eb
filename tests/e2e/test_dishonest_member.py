"""End to end (issue 12): dishonest members in a live federation (separate node processes, real
anvil, real libp2p, tiny model). One three-node federation, two hostile members:

- node 1 is a front-runner (B6) and a vetoer (B3): it never trains, commits a copy of the first
  other update hash it sees (claiming 16 samples), and as verifier always votes reject;
- node 2 serves its update to nobody until the round's aggregate is submitted, then to every
  member except the elected aggregator (B4, selective serving): no verifier can hold a copy to
  pass on to the aggregator, so the update is withheld from the aggregator in every round that
  node 2 does not aggregate itself;
- node 0 is honest, with a slow commit transaction (3 s: a slow mempool, the front-runner's window).

The federation runs until rounds 1 and 2 are final and the withholder was attacked (left out by
another aggregator) at least once: each round attacks with probability 2/3 (the election is
random), so that takes 2 rounds in 8 runs of 9; the nodes may go on to ``MAX_ROUNDS`` (the
withholder aggregating every one of them, probability 3^-7 ~ 0.05%, fails the test).

On the old code the front-runner's copy blocked its victim's commit (duplicate-hash rule, the
victim took the revert for success), one reject vetoed the honest aggregate, and the verifiers
rejected the honest aggregator for leaving out the withheld update. Now: every round finalizes at
its first attempt, the copy is excluded (the file names its author) and earns nothing, the vetoer
forfeits the round, the honest aggregator is paid in full, the withholder loses its contributor
reward in every attacked round and gains nothing an honest verifier would not, and the exclusions
are on-chain (UpdateExcluded).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_kit import REWARDS, History, expected_round_rewards, history, log_text, paid, run

from chain import types as ev
from localnet.federation import Federation, down

pytestmark = pytest.mark.slow
C, A, V = REWARDS
MAX_ROUNDS = 7


def _attacked(fed: Federation, h: History) -> list[int]:
    """Finalized rounds aggregated by someone other than the withholder (node 2)."""
    withholder = fed.devnet.addresses[2].lower()
    finals = h.of(ev.RoundFinalized)
    return [f.round for f in finals if h.submission(f.round, f.attempt).aggregator.lower() != withholder]


def _enough(fed: Federation, h: History) -> bool:
    final = {f.round for f in h.of(ev.RoundFinalized)}
    if h.of(ev.RoundFailed) or len(final) >= MAX_ROUNDS:
        return True
    return {1, 2} <= final and bool(_attacked(fed, h))


def test_front_runner_vetoer_and_selective_server_gain_nothing(tmp_path: Path) -> None:
    faults = {0: "slow-commit", 1: "front-run,always-reject", 2: "withhold-from-aggregator"}
    fed, _ = run(tmp_path / "fed", 3, MAX_ROUNDS, faults, False, timeout_s=600, until=_enough)
    try:
        h = history(fed)
        assert h.of(ev.RoundFailed) == []
        finals = sorted(f.round for f in h.of(ev.RoundFinalized))
        assert finals == list(range(1, len(finals) + 1)) and len(finals) >= 2
        client = fed.client()
        honest, copier, withholder = (a.lower() for a in fed.devnet.addresses)
        assert h.of(ev.AttemptFailed) == []  # no attempt was lost to the veto or the withholding
        attacked = _attacked(fed, h)
        assert attacked, f"the withholder aggregated all {len(finals)} rounds (probability 3^-{len(finals)})"
        for r in finals:
            final = h.final(r)
            sub = h.submission(r, final.attempt)
            agg = sub.aggregator.lower()
            included = {a.lower() for a in sub.included}
            commits = {c.member.lower(): bytes(c.sha256) for c in h.of(ev.UpdateCommitted, r)}
            # B6: the copier committed someone else's hash; its copy is never aggregated
            assert set(commits) == {honest, copier, withholder}
            assert commits[copier] in (commits[honest], commits[withholder])
            assert copier not in included and honest in included
            # B4: the withholder refuses the elected aggregator its update, and nobody else holds it
            # before the aggregate is submitted: it is in only when the withholder aggregated
            assert (withholder in included) == (agg == withholder)
            assert (r in attacked) == (agg != withholder)
            excluded = {(e.member.lower(), e.aggregator.lower()) for e in h.of(ev.UpdateExcluded, r)}
            assert excluded == {(m, agg) for m in (honest, copier, withholder) if m not in included}
            reasons = {e.member.lower(): e.reason for e in h.of(ev.UpdateExcluded, r)}
            if r in attacked:  # withheld: unavailable (only its contributor reward lost), not invalid
                assert reasons[withholder] == "unavailable"
            # B3: the vetoer rejected, the round was still approved at once
            votes = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, r)}
            if agg != copier:
                assert votes[copier] is False
            assert all(votes[m] for m in votes if m != copier)
            # who was paid what in this round
            got = paid(h, r)
            assert got == {a: x for (rr, a), x in expected_round_rewards(h).items() if rr == r}
            # an honest aggregator that left the withheld update out is paid in full
            if agg != copier:
                assert got[agg] == A + (C if agg in included else 0)
            assert got[honest] == C + (A if agg == honest else V)  # the victim of the copy
            if agg == copier and commits[copier] == commits[withholder]:
                # it aggregated and copied the withheld update: nobody could fetch the copied file
                # to prove the copy invalid; left out as unavailable, it keeps only its aggregator
                # reward (for an aggregation the verifiers checked), nothing for the copy
                assert got.get(copier, 0) == A and reasons[copier] == "unavailable"
            else:
                assert got.get(copier, 0) == 0  # its copy is invalid: it forfeits, even as aggregator
            if r in attacked:  # the withholder: an honest verifier's V, no contributor reward
                assert got[withholder] == V
            else:  # it aggregated: exactly what an honest aggregator gets
                assert got[withholder] == C + A
        # balances on-chain are the sum of it
        per_round = expected_round_rewards(h)
        for a in (honest, copier, withholder):
            assert client.token_balance(a) == sum(x for (_, m), x in per_round.items() if m == a)
        # the copier really raced; the withholder really refused; the victim never took a refusal
        # for success
        assert "TEST FAULT front-run: committed a copy" in log_text(fed, 1)
        assert "TEST FAULT withhold-from-aggregator: refusing" in log_text(fed, 2)
        victim_log = log_text(fed, 0)
        assert "REFUSED" not in victim_log and victim_log.count("committed update") >= len(finals)
        # the federation goes on: each round started from the previous round's global adapter
        for r in finals[1:]:
            opened = h.of(ev.RoundOpened, r)[0]
            assert bytes(opened.base_sha256) == bytes(h.final(r - 1).global_sha256)
    finally:
        down(fed.dir)
