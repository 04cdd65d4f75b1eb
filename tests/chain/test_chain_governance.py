"""issue 21: membership, parameters and hand-over decided by the members' votes, on-chain.

The base federation has 4 members (m0..m3) and a funded outsider; nobody else has any power.
"""

from __future__ import annotations

import pytest
from chain_testkit import CID, INITIAL_CID, INITIAL_SHA, PARAMS, Fed, sha

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ContractRevert
from chain.gas import gas_limit
from chain.profile import DEVNET
from chain.types import (
    MemberAdded,
    MemberRemoved,
    ParamChanged,
    Phase,
    ProposalCreated,
    ProposalExecuted,
    ProposalPassed,
    ProposalRejected,
    ProposalStatus,
    ProposalVoid,
    RoundOpened,
    Successor,
)
from localnet.anvil import set_balance
from localnet.chain import new_account


def created_id(res: object) -> int:
    ev = res.first(ProposalCreated)  # type: ignore[attr-defined]
    assert isinstance(ev, ProposalCreated)
    return int(ev.id)


def finish_round(fed: Fed, r: int, committers: list[int]) -> None:
    """Close, aggregate and finalize round `r` committed by `committers`."""
    fed.close_commits()
    fed.outsider.advance(r)
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha(f"agg{r}"), CID, [fed.addr(i) for i in committers])
    for i in committers:
        if fed.m[i] is not agg:
            fed.m[i].vote(r, True)
    if fed.info().phase == Phase.VERIFY:
        fed.outsider.finalize(r)
    assert fed.info().phase == Phase.FINALIZED


def test_quorum_is_two_thirds_of_the_members_and_never_one(fed: Fed) -> None:
    newcomer = new_account().address
    res = fed.m[0].propose_add_member(newcomer)  # the proposer's yes counts: 1 of 3 needed
    pid = created_id(res)
    p = fed.view.proposal(pid)
    assert (p.status, p.yes, p.no, p.required) == (ProposalStatus.OPEN, 1, 0, 3)
    fed.m[1].vote_proposal(pid, True)
    assert not fed.view.is_member(newcomer)  # 2 of 4 is not 2/3
    res = fed.m[2].vote_proposal(pid, True)
    assert [type(e).__name__ for e in res.events] == [
        "ProposalVoted",
        "ProposalPassed",
        "MemberAdded",
        "ProposalExecuted",
    ]
    assert fed.view.is_member(newcomer)  # no round live: applied at once
    assert fed.view.proposal(pid).status == ProposalStatus.EXECUTED
    # a removal among 5: the target does not vote, 4 eligible, 3 needed
    pid = created_id(fed.m[0].propose_remove_member(fed.addr(3)))
    with pytest.raises(ContractRevert, match="the target of a removal does not vote"):
        fed.m[3].vote_proposal(pid, False)
    assert fed.view.proposal(pid).required == 3
    fed.m[1].vote_proposal(pid, True)
    res = fed.m[2].vote_proposal(pid, True)
    assert isinstance(res.first(MemberRemoved), MemberRemoved)
    assert not fed.view.is_member(fed.addr(3))


def test_two_members_need_both_and_cannot_remove_each_other(fed: Fed) -> None:
    url = fed.url
    a, b = new_account(), new_account()
    for w in (a, b):
        set_balance(url, w.address, 10**20)
    dep = deploy_federation(
        url, a, PARAMS, INITIAL_SHA, INITIAL_CID, "tiny", sha("cfg"), DEVNET, members=[a.address, b.address]
    )
    ca = CoordinatorClient(url, dep.coordinator, a, DEVNET, w3=fed.base.w3)
    cb = ca.with_wallet(b)
    pid = created_id(ca.propose_param("contributor_reward", 1))
    assert ca.proposal(pid).required == 2 and ca.params().contributor_reward == PARAMS.contributor_reward
    cb.vote_proposal(pid, True)
    assert ca.params().contributor_reward == 1
    with pytest.raises(ContractRevert, match="a removal needs two other members to vote"):
        ca.propose_remove_member(b.address)


def test_one_hostile_member_cannot_admit_a_sybil_or_remove_anyone(fed: Fed) -> None:
    hostile, sybil = fed.m[0], fed.base.outsider.address
    balances = fed.balances()
    members = set(fed.view.members())
    pid = created_id(hostile.propose_add_member(sybil))
    with pytest.raises(ContractRevert, match="already voted on this proposal"):
        hostile.vote_proposal(pid, True)
    with pytest.raises(ContractRevert, match="not a member"):
        fed.outsider.vote_proposal(pid, True)  # the Sybil cannot vote itself in
    with pytest.raises(ContractRevert, match="membership is not open"):
        fed.outsider.join()
    rid = created_id(hostile.propose_remove_member(fed.addr(1)))
    oid = created_id(hostile.propose_param("open_membership", 1))
    rwd = created_id(hostile.propose_param("contributor_reward", 10**30))
    # nothing passed: the same hostile key sending again is refused before and after the preflight
    hostile.preflight = False
    with pytest.raises(ContractRevert, match="already voted on this proposal"):
        hostile.vote_proposal(rid, True)
    for i in (pid, rid, oid, rwd):
        assert fed.view.proposal(i).status == ProposalStatus.OPEN
    fed.warp_past(max(fed.view.proposal(i).deadline for i in (pid, rid, oid, rwd)))
    for i in (pid, rid, oid, rwd):
        assert fed.view.proposal(i).status == ProposalStatus.EXPIRED
    with pytest.raises(ContractRevert, match="voting on the proposal closed"):
        fed.m[1].vote_proposal(pid, True)
    assert set(fed.view.members()) == members and not fed.view.is_member(sybil)
    assert fed.view.params().contributor_reward == PARAMS.contributor_reward
    assert not fed.view.params().open_membership
    assert fed.balances() == balances and fed.view.token_balance(sybil) == 0


def test_no_votes_reject_when_the_quorum_is_out_of_reach(fed: Fed) -> None:
    pid = created_id(fed.m[0].propose_add_member(fed.base.outsider.address))
    fed.m[1].vote_proposal(pid, False)
    res = fed.m[2].vote_proposal(pid, False)  # 4 - 2 no = 2 < 3 needed
    rej = res.first(ProposalRejected)
    assert isinstance(rej, ProposalRejected) and (rej.yes, rej.no) == (1, 2)
    with pytest.raises(ContractRevert, match="the proposal is decided"):
        fed.m[3].vote_proposal(pid, True)


def test_a_removed_members_ballot_no_longer_counts(fed: Fed) -> None:
    pid = created_id(fed.m[3].propose_param("verifier_reward", 5))  # m3's yes
    fed.pass_proposal(fed.m[0].propose_remove_member(fed.addr(3)), [1])
    assert fed.view.proposal(pid).yes == 0  # m3 is gone with its ballot; 3 members, 2 needed
    fed.m[0].vote_proposal(pid, True)
    fed.m[1].vote_proposal(pid, True)
    assert fed.view.params().verifier_reward == 5


def test_changes_passed_during_a_round_wait_for_the_next_open_round(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2, 3])
    newcomer = new_account()
    set_balance(fed.url, newcomer.address, 10**20)
    add = fed.pass_proposal(fed.m[0].propose_add_member(newcomer.address), [1, 2])
    dur = fed.pass_proposal(fed.m[0].propose_param("commit_duration", 33), [1, 2])
    assert fed.view.proposal(add).status == ProposalStatus.QUEUED
    assert not fed.view.is_member(newcomer.address) and fed.view.queued_count() == 2
    assert fed.view.params().commit_duration == PARAMS.commit_duration_s
    with pytest.raises(ContractRevert, match="not a member"):
        fed.client(newcomer).commit_update(r, sha("late"), CID, 1)
    finish_round(fed, r, [0, 1, 2, 3])
    assert not fed.view.is_member(newcomer.address)  # still between rounds: applied by openRound
    assert fed.view.params().commit_duration == PARAMS.commit_duration_s
    res = fed.outsider.open_round()
    names = [type(e).__name__ for e in res.events]
    assert names.index("MemberAdded") < names.index("RoundOpened")
    assert isinstance(res.first(ParamChanged), ParamChanged)
    opened = res.first(RoundOpened)
    assert isinstance(opened, RoundOpened)
    assert opened.commit_deadline == fed.view.chain_time() + 33
    assert res.gas_used < gas_limit("openRound", 5, 4, 2)
    assert fed.view.queued_count() == 0
    assert fed.view.proposal(add).status == fed.view.proposal(dur).status == ProposalStatus.EXECUTED
    fed.client(newcomer).commit_update(r + 1, sha("newcomer"), CID, 7)  # trains in the next round
    assert isinstance(res.first(MemberAdded), MemberAdded)


def test_a_passed_change_that_no_longer_applies_is_void(fed: Fed) -> None:
    r = fed.open_and_commit([0])
    a = fed.pass_proposal(fed.m[0].propose_remove_member(fed.addr(3)), [1])
    b = fed.pass_proposal(fed.m[1].propose_remove_member(fed.addr(3)), [2])
    finish_round(fed, r, [0])
    res = fed.outsider.open_round()
    void = res.first(ProposalVoid)
    assert isinstance(void, ProposalVoid) and void.id == b and void.reason == "target is not a member"
    assert fed.view.proposal(a).status == ProposalStatus.EXECUTED
    assert fed.view.proposal(b).status == ProposalStatus.VOID


def test_parameter_ranges_and_kinds_are_checked(fed: Fed) -> None:
    for name, value, why in (
        ("max_attempts", 0, "value out of range"),
        ("max_attempts", 17, "value out of range"),
        ("min_committers", 97, "value out of range"),
        ("commit_duration", 0, "value out of range"),
        ("open_membership", 2, "value out of range"),
    ):
        with pytest.raises(ContractRevert, match=why):
            fed.m[0].propose_param(name, value)
    with pytest.raises(ValueError, match="unknown parameter"):
        fed.m[0].propose_param("base_model", 1)
    with pytest.raises(ContractRevert, match="unknown proposal kind"):
        fed.m[0]._transact("propose", 9, 0, fed.addr(0), 0)
    with pytest.raises(ContractRevert, match="no other coordinator at the successor address"):
        fed.m[0].propose_successor(fed.base.outsider.address)  # no code there
    with pytest.raises(ContractRevert, match="no other coordinator at the successor address"):
        fed.m[0].propose_successor(fed.view.address)


def test_hand_over_to_a_successor_retires_this_coordinator(fed: Fed) -> None:
    nxt = deploy_federation(
        fed.url,
        fed.base.admin,
        PARAMS,
        INITIAL_SHA,
        INITIAL_CID,
        "tiny",
        sha("cfg"),
        DEVNET,
        members=[w.address for w in fed.base.members],
        w3=fed.base.w3,
    )
    r = fed.open_and_commit([0, 1])
    pid = fed.pass_proposal(fed.m[0].propose_successor(nxt.coordinator), [1, 2])
    assert fed.view.proposal(pid).status == ProposalStatus.QUEUED and fed.view.successor() is None
    finish_round(fed, r, [0, 1])
    res = fed.outsider.open_round()  # applies the hand-over instead of opening round 2
    succ = res.first(Successor)
    assert isinstance(succ, Successor) and succ.coordinator == nxt.coordinator and succ.proposal == pid
    assert res.first(RoundOpened) is None and fed.view.current_round() == r
    assert isinstance(res.first(ProposalExecuted), ProposalExecuted)
    assert fed.view.successor() == nxt.coordinator
    for call in (
        lambda: fed.outsider.open_round(),
        lambda: fed.m[0].propose_add_member(fed.base.outsider.address),
        lambda: fed.outsider.join(),
    ):
        with pytest.raises(ContractRevert, match="the federation moved to its successor"):
            call()


def test_hand_over_between_rounds_applies_at_the_deciding_vote(fed: Fed) -> None:
    nxt = deploy_federation(
        fed.url, fed.base.admin, PARAMS, INITIAL_SHA, INITIAL_CID, "tiny", sha("cfg"), DEVNET, w3=fed.base.w3
    )
    pid = created_id(fed.m[0].propose_successor(nxt.coordinator))
    fed.m[1].vote_proposal(pid, True)
    res = fed.m[2].vote_proposal(pid, True)
    passed = res.first(ProposalPassed)
    assert isinstance(passed, ProposalPassed) and not passed.queued
    assert isinstance(res.first(Successor), Successor) and fed.view.successor() == nxt.coordinator
