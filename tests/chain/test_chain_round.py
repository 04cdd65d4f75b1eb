"""The coordinator's round lifecycle on a real anvil: happy path, reassignment, failure, rewards."""

from __future__ import annotations

import pytest
from chain_testkit import CID, INITIAL_CID, INITIAL_SHA, PARAMS, Fed, sha

from chain.errors import ContractRevert
from chain.types import (
    AggregateSubmitted,
    AggregatorElected,
    AttemptFailed,
    Phase,
    RewardPaid,
    RoundFailed,
    RoundFinalized,
    RoundOpened,
    UpdateCommitted,
)

C, A, V = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward


def close_commits(fed: Fed) -> None:
    fed.close_commits()


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
        agg_idx = (round_no + 0) % 3  # rotation: committers[(round + attempt) % n]
        assert fed.view.aggregator_of(round_no) == fed.addr(agg_idx)
        assert fed.view.rotation_aggregator(round_no, 0) == fed.addr(agg_idx)
        new_sha = sha(f"global-{round_no}")
        everyone = [fed.addr(i) for i in range(3)]
        res = fed.m[agg_idx].submit_aggregate(round_no, new_sha, f"{CID}{round_no}", everyone)
        assert [type(e) for e in res.events] == [AggregatorElected, AggregateSubmitted]
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
    assert expected == [2 * C + 2 * V, 2 * C + A + V, 2 * C + A + V, 0]


def test_rejection_moves_to_next_aggregator_which_succeeds(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    first = fed.by_address(fed.view.aggregator_of(r))
    first_idx = fed.m.index(first)
    assert first_idx == r % 3
    all3 = [fed.addr(i) for i in range(3)]
    first.submit_aggregate(r, sha("bad aggregate"), CID, all3)
    verifiers = [i for i in range(3) if i != first_idx]
    fed.m[verifiers[0]].vote(r, False)
    res = fed.view.with_wallet(fed.base.outsider).finalize(r)  # 1 reject of 2 eligible > 1/3: decided early
    failed = res.first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "rejected" and failed.attempt == 0
    elected = res.first(AggregatorElected)
    second_idx = (r + 1) % 3
    assert isinstance(elected, AggregatorElected) and elected.attempt == 1
    assert elected.aggregator == fed.addr(second_idx)
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
    for i in verifiers:
        if i != second_idx:
            expected[i] += V  # approved the accepted aggregate
    expected[verifiers[0]] += V  # also rejected the rejected one: voted with that attempt's outcome
    assert fed.balances() == expected
    assert expected[first_idx] == 0 and fed.balances()[first_idx] == 0
    assert all(e.to != fed.addr(first_idx) for e in fin.events if isinstance(e, RewardPaid))


def test_forfeit_covers_verifier_credits_and_ends_with_the_round(fed: Fed) -> None:
    # attempt 0: a0's aggregate is rejected by a1; attempt 1: a1's is rejected by a2;
    # attempt 2: a2's is accepted. a1 voted with attempt 0's outcome but forfeits that credit too.
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    a0, a1, a2 = (r % 3, (r + 1) % 3, (r + 2) % 3)
    all3 = [fed.addr(i) for i in range(3)]
    for author, rejecter in ((a0, a1), (a1, a2)):
        assert fed.view.aggregator_of(r) == fed.addr(author)
        fed.m[author].submit_aggregate(r, sha(f"bad by {author}"), CID, all3)
        fed.m[rejecter].vote(r, False)
        failed = fed.admin.finalize(r).first(AttemptFailed)
        assert isinstance(failed, AttemptFailed) and failed.reason == "rejected"
    assert fed.view.aggregator_of(r) == fed.addr(a2)
    fed.m[a2].submit_aggregate(r, sha("good"), CID, all3)
    fed.m[a0].vote(r, True)
    fed.m[a1].vote(r, True)
    paid = [e for e in fed.admin.finalize(r).events if isinstance(e, RewardPaid)]
    assert {e.to for e in paid} == {fed.addr(a2)}
    expected = [0, 0, 0, 0]
    expected[a2] = C + A + V  # contributor, aggregator, and the rejecter of attempt 1
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
    assert isinstance(elected1, AggregatorElected) and elected1.aggregator == fed.addr((r + 1) % 3)
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
    for attempt in range(PARAMS.max_attempts):
        agg = fed.by_address(fed.view.aggregator_of(r))
        assert fed.m.index(agg) == (r + attempt) % 3
        agg.submit_aggregate(r, sha(f"bad {attempt}"), CID, [fed.addr(0)])
        voter = next(c for c in fed.m[:3] if c is not agg)
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


def test_verify_deadline_without_votes_rejects(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])
    fed.warp_past(fed.info().verify_deadline)
    failed = fed.admin.advance(r).first(AttemptFailed)
    assert isinstance(failed, AttemptFailed) and failed.reason == "rejected"
    assert fed.info().attempt == 1


def test_excluded_committer_earns_no_contributor_reward(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    close_commits(fed)
    agg_idx = r % 3
    included = [fed.addr(i) for i in range(3) if i != (agg_idx + 1) % 3]
    fed.m[agg_idx].submit_aggregate(r, sha("agg"), CID, included)
    assert fed.view.included_members() == sorted(included, key=lambda a: int(a, 16))
    for i in range(3):
        if i != agg_idx:
            fed.m[i].vote(r, True)
    fed.admin.finalize(r)
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
