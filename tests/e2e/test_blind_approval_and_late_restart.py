"""End to end (issue 12, B7 and B5): a verifier that approves without checking, and a member that
crashes after committing and comes back too late; live (separate node processes, real anvil, real
libp2p, tiny model). One four-node federation:

- node 0 approves every aggregate it is asked to verify without fetching or recomputing anything
  (``blind-approve``); it never tampers;
- node 1 crashes right after its round-1 commit is mined, before anyone could fetch its update,
  and is started again only once an aggregate of round 1 is on-chain (B5: nobody attacks in round
  1; the blind approver approves a correct aggregate there);
- nodes 1, 2 and 3 submit a tampered aggregate whenever they are elected at attempt 0 of a round
  from 2 on (``tamper-aggregate@r.0``); at any later attempt they aggregate honestly.

Round 1 (B5): the aggregator leaves node 1's update out after its fetch patience and is paid in
full (contributor + aggregator); no attempt fails by vote; node 1 loses only its contributor
reward (it is paid a verifier reward only if it came back in time to approve); the exclusion is
on-chain; round 2 includes node 1 again. If node 1 itself is elected, its attempt times out
(nobody is blamed) and the next committer finishes the round, paid in full.

Rounds 2+ (B7): the election is random (blockhash seed), so a tamperer is elected at attempt 0
with probability 3/4 in each round. The federation runs until a tampered round is final and the
next round opened from its global adapter: the two honest verifiers reject (two rejections reject
at 4 members), the blind approver approves and forfeits the whole round (paid nothing, its
contributor reward included), the tamperer forfeits, the rejecters are credited, and the next
attempt's aggregator is paid (unless it is the blind approver, which has forfeited). Residual
probability that no round from 2 to ``LAST_ATTACK_ROUND`` is attacked (the blind approver elected
first in each): 4^-6 ~ 0.02%; the test then fails saying so. (The blind approver votes at once,
before the honest verifiers have recomputed; should its vote be mined after the decision, it is
refused and that round, still asserted, does not count as the attack.) A round without tampering in which
the blind approver verified pays it the verifier reward like anyone (the documented limit:
approving a correct aggregate blindly cannot be told from checking it, docs/threat-model.md).

On the old code (before issue 12) the approvers of a rejected aggregate kept their rewards (the
blind approver was paid contributor + verifier), and verifiers rejected an aggregate that left out
an update they could fetch (the honest round-1 aggregator was rejected when node 1 came back while
the verifiers still tried to fetch its update).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_kit import REWARDS, History, expected_round_rewards, history, log_text, paid, run

from chain import types as ev
from localnet.federation import Federation, down

pytestmark = pytest.mark.slow
C, A, V = REWARDS
LAST_ATTACK_ROUND = 7
BLIND, LATE = 0, 1


def _tampered(h: History) -> list[int]:
    """Finalized rounds whose attempt 0 failed (the tamperers' rounds)."""
    final = {f.round for f in h.of(ev.RoundFinalized)}
    return sorted({e.round for e in h.of(ev.AttemptFailed) if e.round >= 2 and e.attempt == 0} & final)


def _caught(fed: Federation, h: History) -> list[int]:
    """Tampered rounds in which the blind approver's approval of attempt 0 is on-chain (it approves
    at once, before the honest verifiers have recomputed, but a vote mined after the decision is
    refused: such a round is asserted, not counted as the attack)."""
    blind = fed.devnet.addresses[BLIND].lower()
    votes = h.of(ev.VoteCast)
    approved = {v.round for v in votes if v.attempt == 0 and v.approve and v.voter.lower() == blind}
    return [r for r in _tampered(h) if r in approved]


def _enough(fed: Federation, h: History) -> bool:
    """A round where the blind approver approved a tampered aggregate is final and the next one
    opened (or it is hopeless: a failed round, or none up to LAST_ATTACK_ROUND)."""
    if h.of(ev.RoundFailed):
        return True
    caught = _caught(fed, h)
    if caught:
        return bool(h.of(ev.RoundOpened, caught[0] + 1))
    return max((f.round for f in h.of(ev.RoundFinalized)), default=0) >= LAST_ATTACK_ROUND


def _late_restart(fed: Federation, h: History, node: int) -> bool:
    """Node 1 comes back only once round 1's aggregate is on-chain (its update was left out)."""
    return node == LATE and bool(h.of(ev.AggregateSubmitted, 1))


def test_blind_approver_forfeits_and_a_late_member_costs_the_aggregator_nothing(tmp_path: Path) -> None:
    tamper = ",".join(f"tamper-aggregate@{r}.0" for r in range(2, LAST_ATTACK_ROUND + 1))
    honest = f"slow-verify,{tamper}"  # verifiers with a real model's recomputation time
    faults = {BLIND: "blind-approve", LATE: f"crash-after-commit@1,{honest}", 2: honest, 3: honest}
    fed, _ = run(
        tmp_path / "fed",
        4,
        LAST_ATTACK_ROUND + 1,
        faults,
        False,
        timeout_s=600,
        commit_s=120,  # room for the late member to be back in round 2 (all commit: it closes early)
        verify_s=30,  # both honest rejections must arrive (one alone would only dispute)
        # verifiers keep trying to fetch an update this long: long enough for the late member to
        # be back (about 8 s on an idle machine) while a verifier of the old code still waits for
        # its update (it then rejected the aggregate for leaving it out)
        fetch_patience_s=12.0,
        until=_enough,
        restart_when=_late_restart,
    )
    try:
        h = history(fed)
        client = fed.client()
        members = [a.lower() for a in fed.devnet.addresses]
        blind, late = members[BLIND], members[LATE]
        assert h.of(ev.RoundFailed) == []
        assert fed.restarts == {LATE: 1}
        per_round = expected_round_rewards(h)

        # ---- round 1 (B5): a member that crashed after committing and is back too late
        final1 = h.final(1)
        sub1 = h.submission(1, final1.attempt)
        agg1 = sub1.aggregator.lower()
        inc1 = {a.lower() for a in sub1.included}
        failed1 = h.of(ev.AttemptFailed, 1)
        assert all(e.reason == "aggregator timeout" for e in failed1), failed1  # never by vote
        assert late in {c.member.lower() for c in h.of(ev.UpdateCommitted, 1)}
        assert late not in inc1 and inc1 == set(members) - {late}
        excluded = {(e.member.lower(), e.aggregator.lower(), e.reason) for e in h.of(ev.UpdateExcluded, 1)}
        assert excluded == {(late, agg1, "unavailable")}
        elected0 = [e.aggregator.lower() for e in h.of(ev.AggregatorElected, 1) if e.attempt == 0]
        if elected0 == [late]:  # the crashed member was elected: its attempt timed out, the next finished
            assert [e.attempt for e in failed1] == [0] and final1.attempt == 1
        else:
            assert failed1 == [] and final1.attempt == 0
        assert agg1 != late
        got1 = paid(h, 1)
        assert got1 == {a: x for (r, a), x in per_round.items() if r == 1}
        assert got1[agg1] == C + A  # the honest aggregator that left it out is paid in full
        votes1 = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, 1) if v.attempt == final1.attempt}
        assert all(votes1.values())  # nobody rejected
        # the late member loses its contributor reward, nothing else: a verifier reward if it came
        # back in time to approve
        assert got1.get(late, 0) == (V if votes1.get(late) else 0)
        # round 1 has no tampering: the blind approver, if it verified, is paid like a real check
        if agg1 != blind:
            assert got1[blind] == C + (V if votes1.get(blind) else 0)
        # round 2 includes the late member again
        assert late in {a.lower() for a in h.submission(2, h.final(2).attempt).included}

        # ---- rounds 2+ (B7): tampering aggregators, a blind approver
        tampered, caught = _tampered(h), _caught(fed, h)
        assert caught, f"no tampered round approved by the blind approver in rounds 2-{LAST_ATTACK_ROUND}"
        finals = sorted(f.round for f in h.of(ev.RoundFinalized))
        blind_log = log_text(fed, BLIND)
        for r in finals[1:]:
            final = h.final(r)
            sub0 = h.submission(r, 0)
            agg0 = sub0.aggregator.lower()
            got = paid(h, r)
            assert got == {a: x for (rr, a), x in per_round.items() if rr == r}
            if r not in tampered:  # the blind approver aggregated first: nobody tampers with it
                assert agg0 == blind and final.attempt == 0
                assert got[blind] == C + A
                continue
            assert agg0 != blind and f"TEST FAULT tamper-aggregate: altering the aggregate of round {r}" in (
                log_text(fed, members.index(agg0))
            )
            (failed,) = h.of(ev.AttemptFailed, r)
            assert failed.attempt == 0 and failed.reason == "rejected"
            votes0 = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, r) if v.attempt == 0}
            rejecters = {m for m, ok in votes0.items() if not ok}
            assert rejecters == set(members) - {agg0, blind} and len(rejecters) == 2
            assert final.attempt == 1
            sub1r = h.submission(r, 1)
            agg1r = sub1r.aggregator.lower()
            assert bytes(sub1r.sha256) != bytes(sub0.sha256)
            votes1 = {v.voter.lower(): v.approve for v in h.of(ev.VoteCast, r) if v.attempt == 1}
            assert agg0 not in got  # the tamperer forfeits the round
            if r in caught:  # the blind approver approved the tampered aggregate: it forfeits the round
                assert votes0[blind] is True and blind not in got
                assert f"TEST FAULT blind-approve: approving round {r} attempt 0" in blind_log
            else:  # its approval came after the decision (refused): only the correct one counted
                assert blind not in votes0
                assert got.get(blind, 0) == C + (A if agg1r == blind else V if votes1.get(blind) else 0)
            # the honest rejecters are credited; the next attempt's aggregator is paid (unless it is
            # the blind approver, which forfeited the round)
            for m in rejecters:
                expected = C + V + (A if m == agg1r else V if votes1.get(m) else 0)
                assert got[m] == expected, (r, m)
            if agg1r != blind:
                assert agg1r in rejecters and got[agg1r] == C + V + A
        # balances on-chain are the sum of it
        for a in members:
            assert client.token_balance(a) == sum(x for (_, m), x in per_round.items() if m == a)
        # the federation goes on: every round started from the previous global, the one after the
        # first tampered round too
        for r in [*finals[1:], caught[0] + 1]:
            opened = h.of(ev.RoundOpened, r)[0]
            assert bytes(opened.base_sha256) == bytes(h.final(r - 1).global_sha256)
    finally:
        down(fed.dir)
