"""End to end (issue 12): dishonest members in a live federation (separate node processes, real
anvil, real libp2p, tiny model). One three-node federation, two rounds, two hostile members:

- node 1 is a front-runner (B6) and a vetoer (B3): it never trains, commits a copy of the first
  other update hash it sees (claiming 16 samples), and as verifier always votes reject;
- node 2 serves its update to every member except the elected aggregator (B4; B5, a member
  that restarts too late, is the same case for the aggregator);
- node 0 is honest, with a slow commit transaction (3 s: a slow mempool, the front-runner's window).

On the old code the front-runner's copy blocked its victim's commit (duplicate-hash rule, the
victim took the revert for success), one reject vetoed the honest aggregate, and the verifiers
rejected the honest aggregator for leaving out the withheld update. Now: every round finalizes at
its first attempt, the copy is excluded (the file names its author) and earns nothing, the vetoer
forfeits the round, the honest aggregator is paid, the withholder loses its contributor reward
whenever its update was left out (a verifier that prefetched it may re-serve it to the aggregator:
then it is in), and the exclusions are on-chain (UpdateExcluded).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_kit import REWARDS, expected_round_rewards, history, log_text, paid, run

from chain import types as ev
from localnet.federation import down

pytestmark = pytest.mark.slow
C, A, V = REWARDS


def test_front_runner_vetoer_and_selective_server_gain_nothing(tmp_path: Path) -> None:
    faults = {0: "slow-commit", 1: "front-run,always-reject", 2: "withhold-from-aggregator"}
    fed, done = run(tmp_path / "fed", 3, 2, faults, restart_crashed=False, timeout_s=360)
    try:
        assert done == {1: "finalized", 2: "finalized"}
        h = history(fed)
        client = fed.client()
        honest, copier, withholder = (a.lower() for a in fed.devnet.addresses)
        assert h.of(ev.AttemptFailed) == []  # no attempt was lost to the veto or the withholding
        withheld_from_agg = False
        for r in (1, 2):
            final = h.final(r)
            sub = h.submission(r, final.attempt)
            agg = sub.aggregator.lower()
            included = {a.lower() for a in sub.included}
            commits = {c.member.lower(): bytes(c.sha256) for c in h.of(ev.UpdateCommitted, r)}
            # B6: the copier committed someone else's hash; its copy is never aggregated
            assert set(commits) == {honest, copier, withholder}
            assert commits[copier] in (commits[honest], commits[withholder])
            assert copier not in included and honest in included
            # B4: the withholder refuses the elected aggregator its update. It is still in when the
            # withholder aggregated, or when a verifier that prefetched it (issue 11) re-served it
            # to the aggregator: withholding from one member is futile; else it is left out
            if agg == withholder:
                assert withholder in included
            withheld_from_agg |= withholder not in included
            excluded = {(e.member.lower(), e.aggregator.lower()) for e in h.of(ev.UpdateExcluded, r)}
            assert excluded == {(m, agg) for m in (honest, copier, withholder) if m not in included}
            # B3: the vetoer rejected, the round was still approved at once
            votes = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, r)}
            if agg != copier:
                assert votes[copier] is False
            assert all(votes[m] for m in votes if m != copier)
            # who was paid what in this round
            got = paid(h, r)
            assert got == {a: x for (rr, a), x in expected_round_rewards(h).items() if rr == r}
            assert got.get(agg, 0) >= (0 if agg == copier else A)  # an honest aggregator is paid
            assert got[honest] == C + (A if agg == honest else V)  # the victim of the copy
            assert got.get(copier, 0) == 0  # its copy is invalid: it forfeits the round, even as aggregator
            contributed = C if withholder in included else 0
            assert got.get(withholder, 0) == contributed + (A if agg == withholder else V)
        # balances on-chain are the sum of it
        per_round = expected_round_rewards(h)
        for a in (honest, copier, withholder):
            assert client.token_balance(a) == sum(x for (_, m), x in per_round.items() if m == a)
        # the copier really raced; the victim never took a refusal for success
        assert "TEST FAULT front-run: committed a copy" in log_text(fed, 1)
        if withheld_from_agg:
            assert "TEST FAULT withhold-from-aggregator: refusing" in log_text(fed, 2)
        victim_log = log_text(fed, 0)
        assert "REFUSED" not in victim_log and victim_log.count("committed update") == 2
        # the federation goes on: round 2 started from round 1's global adapter
        opened2 = h.of(ev.RoundOpened, 2)[0]
        assert bytes(opened2.base_sha256) == bytes(h.final(1).global_sha256)
    finally:
        down(fed.dir)
