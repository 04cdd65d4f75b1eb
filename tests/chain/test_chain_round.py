"""The coordinator's round lifecycle on a real anvil: happy path, reassignment, failure, rewards."""

from __future__ import annotations

import pytest
from chain_testkit import CID, INITIAL_CID, INITIAL_SHA, PARAMS, Fed, sha

from chain.errors import ContractRevert
from chain.types import (
    AggregateSubmitted,
    AggregatorElected,
    AttemptFailed,
    ElectionSeed,
    Phase,
    RewardPaid,
    RoundFailed,
    RoundFinalized,
    RoundOpened,
    UpdateCommitted,
    UpdateExcluded,
)

C, A, V = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward


def close_commits(fed: Fed) -> None:
    fed.warp_past(fed.info().commit_deadline)


def happy_round(fed: Fed, committers: list[int]) -> tuple[int, list[RewardPaid]]:
    """A round that every committer includes and approves; returns its aggregator and payments."""
    r = fed.open_and_commit(committers, tag="happy")
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha(f"happy {r}"), CID, sorted(fed.addr(i) for i in committers))
    for i in committers:
        if fed.m[i] is not agg:
            fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    return fed.m.index(agg), [e for e in fin.events if isinstance(e, RewardPaid)]


def test_happy_path_three_members_two_rounds_pays_to_the_wei(fed: Fed) -> None:
    expected = [0, 0, 0, 0]
    for round_no in (1, 2):
        opened = fed.admin.open_round()
        ev = opened.first(RoundOpened)
        assert isinstance(ev, RoundOpened) and ev.round == round_no
        prev = fed.view.global_adapter()
        assert ev.base_sha256 == prev.sha256 and ev.base_cid == prev.cid
        for i in range(3):
            res = fed.m[i].commit_update(round_no, sha(f"r{round_no}-{i}"), CID, 10 + i)
            committed = res.first(UpdateCommitted)
            assert isinstance(committed, UpdateCommitted)
            assert committed.member == fed.addr(i) and committed.num_samples == 10 + i
        assert fed.view.committers() == [fed.addr(i) for i in range(3)]
        assert fed.view.aggregator_of(round_no) is None  # not before the commit deadline
        close_commits(fed)
        # the election draws from the seed (the hash of the last commit's block): computed here too
        agg_idx = fed.m.index(fed.by_address(fed.view.aggregator_of(round_no)))
        assert fed.view.rotation_aggregator(round_no, 0) == fed.addr(agg_idx)
        new_sha = sha(f"global-{round_no}")
        everyone = [fed.addr(i) for i in range(3)]
        res = fed.m[agg_idx].submit_aggregate(round_no, new_sha, f"{CID}{round_no}", everyone)
        assert [type(e) for e in res.events] == [ElectionSeed, AggregatorElected, AggregateSubmitted]
        assert fed.info().phase == Phase.VERIFY
        for i in range(3):
            if i != agg_idx:
                fed.m[i].vote(round_no, True)
        fin = fed.outsider.finalize(round_no)  # anyone may finalize
        done = fin.first(RoundFinalized)
        assert isinstance(done, RoundFinalized) and done.global_sha256 == new_sha
        paid = [e for e in fin.events if isinstance(e, RewardPaid)]
        assert sorted(e.role for e in paid) == ["aggregator"] + ["contributor"] * 3 + ["verifier"] * 2
        for i in range(3):
            expected[i] += C + (A if i == agg_idx else V)
        assert fed.balances() == expected
        g = fed.view.global_adapter()
        assert (g.sha256, g.cid, g.round) == (new_sha, f"{CID}{round_no}", round_no)
        assert fed.view.is_finalized(round_no)
        assert fed.info().phase == Phase.FINALIZED
    assert sum(expected) == 2 * (3 * C + A + 2 * V) and expected[3] == 0


def elected(fed: Fed, r: int) -> int:
    return fed.m.index(fed.by_address(fed.view.aggregator_of(r)))


def test_rejection_moves_to_next_aggregator_which_succeeds(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    first_idx = elected(fed, r)
    all3 = [fed.addr(i) for i in range(3)]
    fed.m[first_idx].submit_aggregate(r, sha("bad aggregate"), CID, all3)
    verifiers = [i for i in range(3) if i != first_idx]
    fed.m[verifiers[0]].vote(r, False)
    with pytest.raises(ContractRevert, match="not decidable yet"):  # one rejection never decides
        fed.admin.finalize(r)
    fed.m[verifiers[1]].vote(r, False)
    res = fed.view.with_wallet(fed.base.outsider).finalize(r)  # two rejections of 2 eligible
    failed = res.first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "rejected" and failed.attempt == 0
    elected1 = res.first(AggregatorElected)
    second_idx = (first_idx + 1) % 3  # later attempts: the next committer in commit order
    assert isinstance(elected1, AggregatorElected) and elected1.attempt == 1
    assert elected1.aggregator == fed.addr(second_idx)
    assert fed.info().phase == Phase.AGGREGATE and fed.info().attempt == 1
    assert fed.balances() == [0, 0, 0, 0]
    good = sha("good aggregate")
    fed.m[second_idx].submit_aggregate(r, good, CID, all3)
    for i in range(3):
        if i != second_idx:
            fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    assert fed.view.global_adapter().sha256 == good
    # the author of the rejected aggregate is paid nothing for the round, although its update is
    # in the accepted aggregate and it approved that aggregate
    expected = [C, C, C, 0]
    expected[first_idx] = 0
    expected[second_idx] += A
    third = 3 - first_idx - second_idx
    expected[third] += 2 * V  # rejected the rejected aggregate, approved the accepted one
    expected[second_idx] += V  # rejected the rejected aggregate
    assert fed.balances() == expected
    assert all(e.to != fed.addr(first_idx) for e in fin.events if isinstance(e, RewardPaid))


def test_one_rejecter_cannot_veto_and_pays_for_rejecting_a_correct_aggregate(fed: Fed) -> None:
    # issue 12 B3, the attack: with 3 members one verifier always rejects. Before: its single
    # vote failed the honest aggregate (the aggregator was paid nothing); elected next, it
    # resubmitted the same hash and took contributor + aggregator + verifier rewards.
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg = elected(fed, r)
    honest, vetoer = [i for i in range(3) if i != agg]
    all3 = [fed.addr(i) for i in range(3)]
    good = sha("correct aggregate")
    fed.m[agg].submit_aggregate(r, good, CID, all3)
    fed.m[vetoer].vote(r, False)
    fed.m[honest].vote(r, True)
    fin = fed.admin.finalize(r)  # every eligible verifier voted: 1 approval, 1 rejection
    assert fin.first(RoundFinalized) is not None
    expected = [C, C, C, 0]
    expected[agg] += A
    expected[honest] += V
    expected[vetoer] = 0  # rejected the aggregate the round accepted: forfeits the round
    assert fed.balances() == expected


def test_rejected_hash_approved_unchanged_pays_its_first_author_not_the_rejecters(fed: Fed) -> None:
    # with 2 members a lone rejection only disputes; the vetoer, elected next, resubmits the same
    # hash and the first aggregator approves it: the first author is paid as aggregator, the
    # vetoer (who rejected what the round accepted) forfeits the round.
    r = fed.open_and_commit([0, 1])
    close_commits(fed)
    first = elected(fed, r)
    vetoer = 1 - first
    same = sha("the one correct aggregate")
    both = [fed.addr(0), fed.addr(1)]
    fed.m[first].submit_aggregate(r, same, CID, both)
    fed.m[vetoer].vote(r, False)
    failed = fed.admin.finalize(r).first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "disputed"
    assert elected(fed, r) == vetoer
    fed.m[vetoer].submit_aggregate(r, same, CID, both)
    fed.m[first].vote(r, True)
    fin = fed.admin.finalize(r)
    paid = {(e.to, e.role) for e in fin.events if isinstance(e, RewardPaid)}
    assert paid == {(fed.addr(first), role) for role in ("contributor", "aggregator", "verifier")}
    expected = [0, 0, 0, 0]
    expected[first] = C + A + V
    assert fed.balances() == expected


def test_blind_approver_of_a_rejected_aggregate_forfeits_the_round(fed: Fed) -> None:
    # issue 12 B7: 4 members; the aggregator tampers, one verifier approves without checking,
    # two reject. The aggregator and the blind approver are paid nothing for the round.
    r = fed.open_and_commit([0, 1, 2, 3])
    close_commits(fed)
    bad = elected(fed, r)
    v = [i for i in range(4) if i != bad]
    blind, honest = v[0], v[1:]
    all4 = [fed.addr(i) for i in range(4)]
    fed.m[bad].submit_aggregate(r, sha("tampered"), CID, all4)
    fed.m[blind].vote(r, True)
    for i in honest:
        fed.m[i].vote(r, False)
    failed = fed.admin.finalize(r).first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "rejected"
    nxt = elected(fed, r)
    fed.m[nxt].submit_aggregate(r, sha("correct"), CID, all4)
    for i in range(4):
        if i != nxt:
            fed.m[i].vote(r, True)
    fed.admin.finalize(r)
    got = fed.balances()
    assert got[bad] == 0 and got[blind] == 0
    for i in honest:
        assert got[i] == C + V + (A if i == nxt else V)


def test_forfeit_ends_with_the_round(fed: Fed) -> None:
    # attempt 0 is rejected by both verifiers; attempt 1 is accepted
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    a0 = elected(fed, r)
    all3 = [fed.addr(i) for i in range(3)]
    fed.m[a0].submit_aggregate(r, sha("bad"), CID, all3)
    for i in range(3):
        if i != a0:
            fed.m[i].vote(r, False)
    fed.admin.finalize(r)
    a1 = elected(fed, r)
    fed.m[a1].submit_aggregate(r, sha("good"), CID, all3)
    for i in range(3):
        if i != a1:
            fed.m[i].vote(r, True)
    fed.admin.finalize(r)
    expected = [0, 0, 0, 0]
    for i in range(3):
        if i != a0:
            expected[i] = C + V + (A if i == a1 else V)
    assert fed.balances() == expected
    # the next round pays everyone again: the forfeits belonged to round r only
    agg, paid = happy_round(fed, [0, 1, 2])
    assert sorted(e.role for e in paid) == ["aggregator"] + ["contributor"] * 3 + ["verifier"] * 2
    for i in range(3):
        expected[i] += C + (A if i == agg else V)
    assert fed.balances() == expected


def test_aggregator_timeout_reassigns_to_next_committer(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    res = fed.admin.advance(r)  # closes commits, elects attempt 0
    elected0 = res.first(AggregatorElected)
    assert isinstance(elected0, AggregatorElected) and elected0.attempt == 0
    fed.warp_past(elected0.aggregate_deadline)
    res = fed.admin.advance(r)
    failed = res.first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "aggregator timeout"
    elected1 = res.first(AggregatorElected)
    first = fed.m.index(fed.by_address(elected0.aggregator))
    assert isinstance(elected1, AggregatorElected) and elected1.aggregator == fed.addr((first + 1) % 3)
    # the timed-out aggregator may no longer submit
    late = fed.by_address(elected0.aggregator)
    with pytest.raises(ContractRevert, match="not the elected aggregator"):
        late.submit_aggregate(r, sha("late"), CID, [fed.addr(0)])
    nxt = fed.by_address(elected1.aggregator)
    nxt.submit_aggregate(r, sha("second try"), CID, [fed.addr(0), fed.addr(1)])
    for i in range(3):
        if fed.addr(i) != elected1.aggregator:
            fed.m[i].vote(r, True)
    fed.admin.finalize(r)
    agg = fed.m.index(nxt)
    expected = [0, 0, 0, 0]
    for i in range(3):
        expected[i] += (C if i in (0, 1) else 0) + (A if i == agg else V)
    # a timed-out aggregator forfeits nothing but the aggregator reward it never earned
    assert expected[fed.m.index(late)] > 0
    assert fed.balances() == expected


def test_attempts_exhausted_fails_round_pays_nothing_keeps_global(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    reasons = []
    first = elected(fed, r)
    for attempt in range(PARAMS.max_attempts):
        agg = fed.by_address(fed.view.aggregator_of(r))
        assert fed.m.index(agg) == (first + attempt) % 3
        agg.submit_aggregate(r, sha(f"bad {attempt}"), CID, [fed.addr(0)])
        for voter in (c for c in fed.m[:3] if c is not agg):
            voter.vote(r, False)
        res = fed.admin.finalize(r)
        reasons += [e for e in res.events if isinstance(e, AttemptFailed | RoundFailed)]
    failed = reasons[-1]
    assert isinstance(failed, RoundFailed)
    assert failed.attempts == PARAMS.max_attempts and failed.reason == "rejected"
    assert sum(isinstance(e, AttemptFailed) for e in reasons) == PARAMS.max_attempts
    assert fed.info().phase == Phase.FAILED
    assert fed.view.aggregator_of(r) is None
    assert fed.balances() == [0, 0, 0, 0]
    g = fed.view.global_adapter()
    assert (g.sha256, g.cid, g.round) == (INITIAL_SHA, INITIAL_CID, 0)
    assert not fed.view.is_finalized(r)
    # the federation goes on from the unchanged global adapter
    opened = fed.admin.open_round().first(RoundOpened)
    assert isinstance(opened, RoundOpened) and opened.round == r + 1 and opened.base_sha256 == INITIAL_SHA
    # every member forfeited round r; the failure cleared that, so the next round pays them all
    for i in range(3):
        fed.m[i].commit_update(r + 1, sha(f"next-{i}"), CID, 1)
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r + 1))
    agg.submit_aggregate(r + 1, sha("next global"), CID, [fed.addr(i) for i in range(3)])
    for i in range(3):
        if fed.m[i] is not agg:
            fed.m[i].vote(r + 1, True)
    fed.admin.finalize(r + 1)
    assert fed.balances() == [C + (A if fed.m[i] is agg else V) for i in range(3)] + [0]


def test_timeouts_exhaust_attempts_too(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1])
    close_commits(fed)
    fed.admin.advance(r)
    for _ in range(PARAMS.max_attempts):
        fed.warp_past(fed.info().aggregate_deadline)
        res = fed.admin.advance(r)
    failed = res.first(RoundFailed)
    assert isinstance(failed, RoundFailed) and failed.reason == "aggregator timeout"
    assert fed.balances() == [0, 0, 0, 0]


def test_no_commits_fails_round_at_commit_deadline(fed: Fed) -> None:
    fed.admin.open_round()
    r = fed.view.current_round()
    close_commits(fed)
    failed = fed.admin.advance(r).first(RoundFailed)
    assert isinstance(failed, RoundFailed) and failed.reason == "too few commits" and failed.attempts == 0


def test_verify_deadline_decides_on_votes_cast(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg_idx = fed.m.index(agg)
    agg.submit_aggregate(r, sha("agg"), CID, [fed.addr(i) for i in range(3)])
    voter = next(i for i in range(3) if i != agg_idx)
    fed.m[voter].vote(r, True)  # 1 of 2 eligible: no early decision
    with pytest.raises(ContractRevert, match="not decidable yet"):
        fed.admin.finalize(r)
    fed.warp_past(fed.info().verify_deadline)
    fed.admin.advance(r)  # one crashed verifier does not fail the round
    expected = [C, C, C, 0]
    expected[agg_idx] += A
    expected[voter] += V  # the silent verifier earns nothing
    assert fed.balances() == expected


def test_verify_deadline_without_votes_disputes(fed: Fed) -> None:
    # no vote at all blames nobody (issue 12): the attempt fails as disputed, the next one goes on
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])
    fed.warp_past(fed.info().verify_deadline)
    failed = fed.admin.advance(r).first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "disputed"
    assert fed.info().attempt == 1


def test_excluded_committer_earns_no_contributor_reward_and_is_recorded(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg_idx = elected(fed, r)
    left_out = (agg_idx + 1) % 3
    included = [fed.addr(i) for i in range(3) if i != left_out]
    fed.m[agg_idx].submit_aggregate(r, sha("agg"), CID, included)
    assert fed.view.included_members() == sorted(included, key=lambda a: int(a, 16))
    for i in range(3):
        if i != agg_idx:
            fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    excluded = [e for e in fin.events if isinstance(e, UpdateExcluded)]
    assert [(e.member, e.aggregator) for e in excluded] == [(fed.addr(left_out), fed.addr(agg_idx))]
    expected = [0, 0, 0, 0]
    for i in range(3):
        expected[i] += (C if fed.addr(i) in included else 0) + (A if i == agg_idx else V)
    assert fed.balances() == expected


def test_metrics_only_after_finalize_and_once_per_round(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1])
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha("agg"), CID, [fed.addr(0), fed.addr(1)])
    other = next(c for c in fed.m[:2] if c is not agg)
    with pytest.raises(ContractRevert, match="not finalized"):
        other.report_metrics(r, sha("eval"), 500_000, 100)
    other.vote(r, True)
    fed.admin.finalize(r)
    res = other.report_metrics(r, sha("eval"), 612_345, 250)
    assert res.events[0].name == "MetricsReported"
    with pytest.raises(ContractRevert, match="already reported"):
        other.report_metrics(r, sha("eval"), 1, 1)


def test_disputed_aggregate_over_the_accepted_inputs_with_another_hash_forfeits(fed: Fed) -> None:
    # 3 members, one verifier silent: a lone rejection of a tampered aggregate only disputes it.
    # The next aggregate over the same updates has another hash and is approved: same inputs,
    # other bytes, so the disputed one was wrong: its author forfeits, its rejecter is credited.
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    bad = elected(fed, r)
    rejecter = (bad + 1) % 3  # also the next aggregator
    all3 = [fed.addr(i) for i in range(3)]
    fed.m[bad].submit_aggregate(r, sha("tampered"), CID, all3)
    fed.m[rejecter].vote(r, False)
    fed.warp_past(fed.info().verify_deadline)
    failed = fed.admin.advance(r).first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "disputed"
    assert elected(fed, r) == rejecter
    fed.m[rejecter].submit_aggregate(r, sha("correct"), CID, all3)
    fed.m[bad].vote(r, True)
    fed.warp_past(fed.info().verify_deadline)
    fed.admin.advance(r)
    expected = [0, 0, 0, 0]
    expected[rejecter] = C + A + V
    expected[3 - bad - rejecter] = C  # silent: contributor only
    assert fed.balances() == expected


def test_commit_timing_does_not_steer_the_election(fed: Fed) -> None:
    # issue 12, deliverable 4, the attack: a member waits until k others committed so that it sits
    # at committers[round % n], which the old rotation always elected. Now the first aggregator is
    # drawn from the hash of the last commit's block (ElectionSeed), which everyone recomputes.
    attacker, rounds, won = 2, 8, 0
    for _ in range(rounds):
        fed.admin.open_round()
        r = fed.view.current_round()
        others = [0, 1]
        order = [*others[: r % 3], attacker, *others[r % 3 :]]
        for i in order:
            fed.m[i].commit_update(r, sha(f"steer {r} {i}"), CID, 1)
        assert fed.view.committers()[r % 3] == fed.addr(attacker)
        close_commits(fed)
        predicted = fed.view.rotation_aggregator(r, 0)  # computed client-side from the block hash
        res = fed.admin.advance(r)
        seed = res.first(ElectionSeed)
        elected_ev = res.first(AggregatorElected)
        assert isinstance(seed, ElectionSeed) and isinstance(elected_ev, AggregatorElected)
        assert elected_ev.aggregator == predicted == fed.view.committers()[seed.first_index]
        won += elected_ev.aggregator == fed.addr(attacker)
        fed.warp_past(fed.info().aggregate_deadline)
        for _ in range(PARAMS.max_attempts):  # let the round time out: nothing else matters here
            fed.admin.advance(r)
            if fed.info().phase == Phase.FAILED:
                break
            fed.warp_past(fed.info().aggregate_deadline)
    assert won < rounds  # the old rotation: won == rounds, every time (here p = 3**-8)
