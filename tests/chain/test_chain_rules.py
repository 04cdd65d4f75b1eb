"""Each coordinator rule refuses what it must, with the contract's reason surfaced."""

from __future__ import annotations

import pytest
from chain_testkit import CID, Fed, sha

from chain.errors import ContractRevert
from chain.types import Phase


def close_commits(fed: Fed) -> None:
    fed.close_commits()


def to_verify(fed: Fed, committers: list[int]) -> tuple[int, int]:
    """Open, commit, submit by the elected aggregator: (round, aggregator index)."""
    r = fed.open_and_commit(committers)
    close_commits(fed)
    agg = fed.m.index(fed.by_address(fed.view.aggregator_of(r)))
    fed.m[agg].submit_aggregate(r, sha("agg"), CID, [fed.addr(i) for i in committers])
    return r, agg


def test_commit_by_non_member_refused(fed: Fed) -> None:
    fed.admin.open_round()
    with pytest.raises(ContractRevert, match="not a member"):
        fed.outsider.commit_update(1, sha("x"), CID, 1)


def test_second_commit_by_member_refused(fed: Fed) -> None:
    r = fed.open_and_commit([0])
    with pytest.raises(ContractRevert, match="already committed this round"):
        fed.m[0].commit_update(r, sha("another"), CID, 1)


def test_same_hash_from_two_members_is_accepted(fed: Fed) -> None:
    # issue 12 B6: no duplicate-hash rule. A copied hash must not block its author: the file names
    # its author, and nodes exclude a commit whose file names another member.
    fed.admin.open_round()
    fed.m[0].commit_update(1, sha("same"), CID, 1)
    fed.m[1].commit_update(1, sha("same"), CID, 1)
    assert fed.view.committers() == [fed.addr(0), fed.addr(1)]


def test_commit_after_deadline_refused(fed: Fed) -> None:
    fed.admin.open_round()
    close_commits(fed)
    with pytest.raises(ContractRevert, match="commit deadline passed"):
        fed.m[0].commit_update(1, sha("late"), CID, 1)


def test_commit_to_wrong_round_and_before_open_refused(fed: Fed) -> None:
    with pytest.raises(ContractRevert, match="not open for commits"):
        fed.m[0].commit_update(1, sha("x"), CID, 1)
    fed.admin.open_round()
    with pytest.raises(ContractRevert, match="not open for commits"):
        fed.m[0].commit_update(2, sha("x"), CID, 1)


def test_aggregate_only_from_elected_aggregator(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    with pytest.raises(ContractRevert, match="not in the aggregation phase"):
        fed.m[0].submit_aggregate(r, sha("early"), CID, [fed.addr(0)])
    close_commits(fed)
    elected = fed.m.index(fed.by_address(fed.view.aggregator_of(r)))
    for i in range(4):
        if i != elected:
            with pytest.raises(ContractRevert, match="not the elected aggregator"):
                fed.m[i].submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])
    with pytest.raises(ContractRevert, match="not the elected aggregator"):
        fed.outsider.submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])
    with pytest.raises(ContractRevert, match="did not commit"):
        fed.m[elected].submit_aggregate(r, sha("agg"), CID, [fed.addr(3)])
    fed.m[elected].submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])


def test_aggregate_after_deadline_refused(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1])
    close_commits(fed)
    fed.admin.advance(r)
    fed.warp_past(fed.info().aggregate_deadline)
    with pytest.raises(ContractRevert, match="aggregate deadline passed"):
        fed.m[r % 2].submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])


def test_vote_from_non_committer_refused(fed: Fed) -> None:
    r, _ = to_verify(fed, [0, 1, 2])
    with pytest.raises(ContractRevert, match="only this round's committers vote"):
        fed.m[3].vote(r, True)  # a member who did not commit
    with pytest.raises(ContractRevert, match="only this round's committers vote"):
        fed.outsider.vote(r, True)


def test_aggregator_cannot_vote(fed: Fed) -> None:
    r, agg = to_verify(fed, [0, 1, 2])
    with pytest.raises(ContractRevert, match="the aggregator does not vote"):
        fed.m[agg].vote(r, True)


def test_double_vote_refused(fed: Fed) -> None:
    r, agg = to_verify(fed, [0, 1, 2])
    voter = (agg + 1) % 3
    fed.m[voter].vote(r, True)
    assert fed.view.has_voted(fed.addr(voter))
    with pytest.raises(ContractRevert, match="already voted this attempt"):
        fed.m[voter].vote(r, False)
    assert fed.info().approvals == 1 and fed.info().rejections == 0


def test_vote_after_verify_deadline_refused(fed: Fed) -> None:
    r, agg = to_verify(fed, [0, 1, 2])
    fed.warp_past(fed.info().verify_deadline)
    with pytest.raises(ContractRevert, match="verify deadline passed"):
        fed.m[(agg + 1) % 3].vote(r, True)


def test_finalize_before_quorum_or_deadline_refused(fed: Fed) -> None:
    r, agg = to_verify(fed, [0, 1, 2, 3])  # 3 eligible verifiers: 2 approvals make the quorum
    with pytest.raises(ContractRevert, match="not decidable yet"):
        fed.admin.finalize(r)
    voters = [i for i in range(4) if i != agg]
    fed.m[voters[0]].vote(r, True)
    with pytest.raises(ContractRevert, match="not decidable yet"):
        fed.admin.finalize(r)
    fed.m[voters[1]].vote(r, True)
    fed.admin.finalize(r)
    assert fed.info().phase == Phase.FINALIZED


def test_finalize_without_aggregate_and_advance_with_nothing_due_refused(fed: Fed) -> None:
    r = fed.open_and_commit([0])
    with pytest.raises(ContractRevert, match="no aggregate awaiting a decision"):
        fed.admin.finalize(r)
    with pytest.raises(ContractRevert, match="nothing to advance yet"):
        fed.admin.advance(r)
    with pytest.raises(ContractRevert, match="not the live round"):
        fed.admin.advance(r + 1)


def test_open_round_refused_while_round_live(fed: Fed) -> None:
    fed.admin.open_round()
    with pytest.raises(ContractRevert, match="previous round not final"):
        fed.m[0].open_round()


def test_membership_by_vote_only_unless_open(fed: Fed) -> None:
    """issue 21: no key alone changes membership; open membership is a voted parameter."""
    names = {f["name"] for f in fed.view.contract.abi if f.get("type") == "function"}
    assert not names & {"addMember", "removeMember", "setOpenMembership", "admin"}
    with pytest.raises(ContractRevert, match="not a member"):
        fed.outsider.propose_add_member(fed.base.outsider.address)
    with pytest.raises(ContractRevert, match="membership is not open"):
        fed.outsider.join()
    with pytest.raises(ContractRevert, match="already a member"):
        fed.m[0].propose_add_member(fed.addr(1))
    fed.pass_proposal(fed.m[0].propose_param("open_membership", 1), [1, 2])
    fed.outsider.join()
    assert fed.view.is_member(fed.base.outsider.address)
    assert fed.view.params().open_membership
    fed.pass_proposal(fed.m[0].propose_remove_member(fed.addr(1)), [2, 3])
    assert not fed.view.is_member(fed.addr(1))
    assert set(fed.view.members()) == {fed.addr(0), fed.addr(2), fed.addr(3), fed.base.outsider.address}
    fed.admin.open_round()
    with pytest.raises(ContractRevert, match="not a member"):
        fed.m[1].commit_update(1, sha("x"), CID, 1)
    with pytest.raises(ContractRevert, match="not a member"):
        fed.m[1].propose_add_member(fed.addr(1))


def test_publish_peer_members_only(fed: Fed) -> None:
    addrs = ["/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001"]
    res = fed.m[0].publish_peer("16Uiu2HAmExample", addrs)
    assert res.events[0].name == "PeerPublished"
    peer = fed.view.member_peer(fed.addr(0))
    assert peer is not None and peer.peer_id == "16Uiu2HAmExample" and list(peer.multiaddrs) == addrs
    assert fed.view.member_peer(fed.addr(1)) is None
    with pytest.raises(ContractRevert, match="not a member"):
        fed.outsider.publish_peer("x", addrs)
