"""chain/diagnose.py reads the contract's reasons from its views: on anvil, where the contract
gives its own reason string, both must agree for every refusal (the views are all that is left
on Cypherium's pre-Byzantium rules)."""

from __future__ import annotations

from typing import Any

import pytest
from chain_testkit import CID, Fed, sha

from chain import diagnose
from chain.client import CoordinatorClient
from chain.errors import ContractRevert


def contract_says(client: CoordinatorClient, fn: str, *args: Any) -> str | None:
    """The contract's own reason (eth_estimateGas against the pending block), None if it passes."""
    assert client._sender is not None
    data = client.contract.encode_abi(fn, args=list(args))
    try:
        client._sender.estimate_gas({"from": client.sender_address, "to": client.address, "data": data}, fn)
    except ContractRevert as exc:
        return exc.reason
    return None


def views_say(client: CoordinatorClient, fn: str, *args: Any) -> str | None:
    now = client.chain_time() + 1  # anvil's pending block
    return diagnose.check(client.contract, fn, args, client.sender_address, now)


def agree(client: CoordinatorClient, fn: str, *args: Any, expect: str | None) -> None:
    assert contract_says(client, fn, *args) == expect
    assert views_say(client, fn, *args) == expect


def test_views_give_the_contracts_reason_through_a_round(fed: Fed) -> None:
    agree(fed.outsider, "propose", 1, 0, fed.base.outsider.address, 0, expect="not a member")
    agree(fed.m[0], "propose", 1, 0, fed.addr(1), 0, expect="already a member")
    agree(fed.outsider, "join", expect="membership is not open: ask the members to vote you in")
    agree(fed.outsider, "publishPeer", "p", "a", expect="not a member")
    r = fed.open_and_commit([0, 1, 2])
    agree(fed.admin, "openRound", expect="previous round not final")
    agree(fed.outsider, "commitUpdate", r, sha("o"), CID, 1, expect="not a member")
    agree(fed.m[0], "commitUpdate", r, sha("again"), CID, 1, expect="already committed this round")
    agree(fed.m[3], "commitUpdate", r + 1, sha("x"), CID, 1, expect="round is not open for commits")
    agree(fed.m[3], "commitUpdate", r, sha("x"), CID, 0, expect="numSamples must be > 0")
    agree(
        fed.m[0],
        "submitAggregate",
        r,
        sha("a"),
        CID,
        [fed.addr(0)],
        [],
        expect="round is not in the aggregation phase",
    )
    agree(fed.m[0], "vote", r, True, expect="round is not in the verification phase")
    agree(fed.admin, "finalize", r, expect="no aggregate awaiting a decision")
    agree(fed.admin, "advance", r, expect="nothing to advance yet")
    agree(fed.admin, "advance", r + 1, expect="not the live round")
    agree(fed.m[0], "reportMetrics", r, sha("e"), 1, 1, expect="round is not finalized")
    fed.warp_past(fed.info().commit_deadline)
    agree(fed.m[3], "commitUpdate", r, sha("x"), CID, 1, expect="commit deadline passed")
    agg_addr = fed.view.rotation_aggregator(r, 0)
    agg = fed.by_address(agg_addr)
    other = next(c for c in fed.m[:3] if c is not agg)
    agree(other, "submitAggregate", r, sha("a"), CID, [fed.addr(0)], [], expect="not the elected aggregator")
    ascending = sorted([fed.addr(0), fed.addr(1)], key=lambda a: int(a, 16))
    agree(agg, "submitAggregate", r, sha("a"), CID, ascending, [], expect=None)
    # issue 12: the invalid claims: ascending committers, disjoint from included
    agree(agg, "submitAggregate", r, sha("a"), CID, ascending, [fed.addr(2)], expect=None)
    agree(
        agg,
        "submitAggregate",
        r,
        sha("a"),
        CID,
        [fed.addr(0)],
        ascending[::-1],
        expect="invalid must be ascending committer addresses",
    )
    agree(
        agg,
        "submitAggregate",
        r,
        sha("a"),
        CID,
        [fed.addr(0)],
        [fed.addr(3)],
        expect="invalid address did not commit this round",
    )
    agree(
        agg,
        "submitAggregate",
        r,
        sha("a"),
        CID,
        ascending,
        [fed.addr(1)],
        expect="an address is both included and invalid",
    )
    descending = ascending[::-1]
    agree(
        agg,
        "submitAggregate",
        r,
        sha("a"),
        CID,
        descending,
        [],
        expect="included must be ascending committer addresses",
    )
    agree(
        agg,
        "submitAggregate",
        r,
        sha("a"),
        CID,
        [fed.addr(3)],
        [],
        expect="included address did not commit this round",
    )
    agree(agg, "submitAggregate", r, sha("a"), CID, [], [], expect="included is empty")
    agg.submit_aggregate(r, sha("a"), CID, [fed.addr(0), fed.addr(1), fed.addr(2)])
    agree(agg, "vote", r, True, expect="the aggregator does not vote")
    agree(fed.m[3], "vote", r, True, expect="only this round's committers vote")
    agree(fed.admin, "finalize", r, expect="not decidable yet: wait for votes or the verify deadline")
    other.vote(r, False)
    agree(other, "vote", r, True, expect="already voted this attempt")
    fed.warp_past(fed.info().verify_deadline)
    last = next(c for c in fed.m[:3] if c is not agg and c is not other)
    agree(last, "vote", r, True, expect="verify deadline passed")
    agree(fed.admin, "advance", r, expect=None)


def test_preflight_leaves_not_yet_due_transitions_to_the_contract(fed: Fed) -> None:
    """Before sending, time may still make these due (a quiet chain's latest block is stale)."""
    r = fed.open_and_commit([0, 1])
    c = fed.admin
    assert (
        diagnose.check(c.contract, "advance", [r], c.sender_address, c.chain_time(), preflight=True) is None
    )
    agg = fed.m[0]
    args = [r, sha("a"), CID, [fed.addr(0)], []]
    assert (
        diagnose.check(
            agg.contract, "submitAggregate", args, agg.sender_address, agg.chain_time(), preflight=True
        )
        is None
    )
    with pytest.raises(ContractRevert, match="nothing to advance yet") as exc:
        c.advance(r)  # sent, mined without an event: diagnosed
    assert exc.value.tx_hash is not None


def test_views_follow_the_early_close_and_the_later_election(fed: Fed) -> None:
    """Every member committed: the last commit closed the phase (deadline moved to its block), the
    election is due in the next block; views and contract agree on every reason meanwhile."""
    r = fed.open_and_commit([0, 1, 2, 3])
    info = fed.info()
    assert info.phase.name == "COMMIT" and info.commit_deadline == fed.view.chain_time()
    head = fed.view.block_number()
    assert diagnose.last_commit_block(fed.view.contract, 4) == head  # the storage slot is right
    assert diagnose.last_commit_block(fed.view.contract, 3) == head - 1
    agree(fed.outsider, "commitUpdate", r, sha("late"), CID, 1, expect="not a member")
    agree(fed.m[0], "commitUpdate", r, sha("late"), CID, 1, expect="commit deadline passed")
    agg = fed.by_address(fed.view.rotation_aggregator(r, 0))
    other = next(c for c in fed.m if c is not agg)
    everyone = sorted((fed.addr(i) for i in range(4)), key=lambda a: int(a, 16))
    agree(other, "submitAggregate", r, sha("a"), CID, everyone, [], expect="not the elected aggregator")
    agree(agg, "submitAggregate", r, sha("a"), CID, everyone, [], expect=None)
    agree(fed.admin, "advance", r, expect=None)
    fed.admin.advance(r)
    agree(fed.m[0], "commitUpdate", r, sha("late"), CID, 1, expect="round is not open for commits")
    agree(fed.admin, "advance", r, expect="nothing to advance yet")
    agree(other, "submitAggregate", r, sha("a"), CID, everyone, [], expect="not the elected aggregator")
    agree(agg, "submitAggregate", r, sha("a"), CID, everyone, [], expect=None)


def test_views_follow_the_vote_rules(fed: Fed) -> None:
    """Issue 12 (B3): one rejection never decides; two decide early; no vote at the deadline disputes."""
    r = fed.open_and_commit([0, 1, 2, 3])
    fed.admin.advance(r)
    agg = fed.by_address(fed.view.aggregator_of(r))
    voters = [c for c in fed.m if c is not agg]
    agg.submit_aggregate(r, sha("a"), CID, [fed.addr(i) for i in range(4)])
    voters[0].vote(r, False)
    agree(fed.admin, "finalize", r, expect="not decidable yet: wait for votes or the verify deadline")
    agree(fed.admin, "advance", r, expect="nothing to advance yet")
    voters[1].vote(r, False)
    agree(fed.admin, "finalize", r, expect=None)  # two of three eligible rejected
    assert diagnose._decision(4, 0, 1, True) == diagnose.DISPUTED
    assert diagnose._decision(4, 0, 0, True) == diagnose.DISPUTED
    assert diagnose._decision(4, 1, 1, True) == diagnose.APPROVED
    assert diagnose._decision(4, 1, 2, True) == diagnose.REJECTED
    assert diagnose._decision(3, 0, 1, False) == 0
    assert diagnose._decision(3, 0, 1, True) == diagnose.DISPUTED  # a lone rejection blames nobody
    assert diagnose._decision(2, 0, 1, False) == diagnose.DISPUTED  # every eligible verifier voted


def test_views_give_the_contracts_reason_for_governance(fed: Fed) -> None:
    """issue 21: every refusal of propose / voteProposal is explained before sending."""
    out, m0 = fed.base.outsider.address, fed.addr(0)
    agree(fed.outsider, "propose", 1, 0, out, 0, expect="not a member")
    agree(fed.m[0], "propose", 1, 0, "0x" + "00" * 20, 0, expect="zero address")
    agree(fed.m[0], "propose", 2, 0, out, 0, expect="target is not a member")
    agree(fed.m[0], "propose", 3, 10, out, 0, expect="unknown parameter")
    agree(fed.m[0], "propose", 3, 3, out, 99, expect="value out of range for this parameter")
    agree(fed.m[0], "propose", 4, 0, out, 0, expect="no other coordinator at the successor address")
    agree(fed.m[0], "propose", 7, 0, out, 0, expect="unknown proposal kind")
    agree(fed.m[0], "propose", 1, 0, out, 0, expect=None)
    agree(fed.m[0], "voteProposal", 1, True, expect="no such proposal")
    fed.m[0].propose_remove_member(fed.addr(3))
    agree(fed.m[0], "voteProposal", 1, True, expect="already voted on this proposal")
    agree(fed.m[3], "voteProposal", 1, False, expect="the target of a removal does not vote")
    agree(fed.outsider, "voteProposal", 1, True, expect="not a member")
    agree(fed.m[1], "voteProposal", 1, True, expect=None)
    fed.m[1].vote_proposal(1, True)
    agree(fed.m[2], "voteProposal", 1, True, expect="the proposal is decided")
    fed.m[0].propose_add_member(out)
    fed.warp_past(fed.view.proposal(2).deadline)
    agree(fed.m[1], "voteProposal", 2, True, expect="voting on the proposal closed")
    assert m0 in fed.view.members()
