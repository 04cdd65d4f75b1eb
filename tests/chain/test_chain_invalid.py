"""issue 12: an update excluded as INVALID costs its author the whole round; one excluded as
UNAVAILABLE costs only the contributor reward; a lying invalid claim costs its aggregator.

The aggregator names the committers whose updates it found invalid in `submitAggregate`'s
`invalid` list; verifiers check those claims (node/roles/verifier.py) and vote; the contract
settles on the accepted attempt's claims (real anvil, the committed artifact)."""

from __future__ import annotations

import pytest
from chain_testkit import CID, PARAMS, Fed, sha

from chain.errors import ContractRevert
from chain.types import AggregateSubmitted, AttemptFailed, RewardPaid, UpdateExcluded

C, A, V = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward


def elected(fed: Fed, r: int) -> int:
    fed.close_commits()
    return fed.m.index(fed.by_address(fed.view.aggregator_of(r)))


def test_invalid_member_is_unpaid_and_unavailable_member_keeps_its_verifier_reward(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2, 3])
    agg = elected(fed, r)
    bad, absent, honest = ((agg + k) % 4 for k in (1, 2, 3))
    included = [fed.addr(agg), fed.addr(honest)]
    sub = fed.m[agg].submit_aggregate(r, sha("agg"), CID, included, [fed.addr(bad)])
    submitted = sub.first(AggregateSubmitted)
    assert isinstance(submitted, AggregateSubmitted) and submitted.invalid == (fed.addr(bad),)
    # every verifier approves, the invalid update's author too: its approval earns nothing
    for i in (bad, absent, honest):
        fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    excluded = {(e.member, e.aggregator, e.reason) for e in fin.events if isinstance(e, UpdateExcluded)}
    assert excluded == {
        (fed.addr(bad), fed.addr(agg), "invalid"),
        (fed.addr(absent), fed.addr(agg), "unavailable"),
    }
    assert fed.addr(bad) not in {e.to for e in fin.events if isinstance(e, RewardPaid)}
    expected = [0, 0, 0, 0]
    expected[agg], expected[honest], expected[absent] = C + A, C + V, V
    assert fed.balances() == expected


def test_invalid_aggregator_forfeits_its_aggregator_reward(fed: Fed) -> None:
    # an aggregator that finds its own update invalid (e.g. a copied hash) names itself: nothing
    r = fed.open_and_commit([0, 1, 2])
    agg = elected(fed, r)
    others = [i for i in range(3) if i != agg]
    fed.m[agg].submit_aggregate(r, sha("agg"), CID, [fed.addr(i) for i in others], [fed.addr(agg)])
    for i in others:
        fed.m[i].vote(r, True)
    fed.admin.finalize(r)
    expected = [0, 0, 0, 0]
    for i in others:
        expected[i] = C + V
    assert fed.balances() == expected


def test_a_lying_invalid_claim_is_rejected_and_costs_its_author(fed: Fed) -> None:
    # attempt 0 claims an honest member's update invalid; two verifiers reject (the claimed update
    # checks out), so it is REJECTED. Attempt 1 leaves the same member out only as unavailable and
    # submits the SAME hash (same inputs): the hash alone would say attempt 0 was right, but its
    # invalid claim is not confirmed by the accepted attempt, so its author forfeits and its
    # rejecters are credited. The victim keeps everything but the contributor reward.
    r = fed.open_and_commit([0, 1, 2, 3])
    liar = elected(fed, r)
    nxt, victim, other = ((liar + k) % 4 for k in (1, 2, 3))
    rest = sorted((fed.addr(i) for i in (liar, nxt, other)), key=lambda a: int(a, 16))
    fed.m[liar].submit_aggregate(r, sha("agg"), CID, rest, [fed.addr(victim)])
    fed.m[nxt].vote(r, False)
    failed = fed.m[victim].vote(r, False)
    assert [e for e in failed.events if isinstance(e, AttemptFailed)] == []  # decided on the next touch
    ev = fed.admin.finalize(r).first(AttemptFailed)
    assert isinstance(ev, AttemptFailed) and ev.reason == "rejected"
    assert elected(fed, r) == nxt
    fed.m[nxt].submit_aggregate(r, sha("agg"), CID, rest)  # no invalid claim: the mask is cleared
    for i in (liar, victim, other):
        fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    excluded = [(e.member, e.reason) for e in fin.events if isinstance(e, UpdateExcluded)]
    assert excluded == [(fed.addr(victim), "unavailable")]
    expected = [0, 0, 0, 0]
    expected[liar] = 0  # its approval of attempt 1 does not save it
    expected[nxt] = C + A + V  # contributor, aggregator, rejecting the lie
    expected[victim] = V + V  # rejecting the lie, approving attempt 1
    expected[other] = C + V
    assert fed.balances() == expected


def test_invalid_claims_are_checked_like_included(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    agg = elected(fed, r)
    a, b = sorted((fed.addr(i) for i in range(3) if i != agg), key=lambda x: int(x, 16))
    with pytest.raises(ContractRevert, match="an address is both included and invalid"):
        fed.m[agg].submit_aggregate(r, sha("agg"), CID, [a, b], [a])
    fed.m[agg].preflight = False  # the contract says the same when asked directly
    with pytest.raises(ContractRevert, match="invalid address did not commit this round") as exc:
        fed.m[agg].submit_aggregate(r, sha("agg"), CID, [a], [fed.addr(3)])
    assert exc.value.tx_hash is not None
