"""issue 20: a member that does not train (its privacy budget is spent) takes part in a round
with `serveRound`: it may be elected aggregator, votes, and is paid as verifier and aggregator
like any committer, never as contributor; it has no update to include or name invalid, and
minCommitters counts updates only (real anvil, the committed artifact)."""

from __future__ import annotations

import pytest
from chain_testkit import CID, PARAMS, Fed, sha

from chain.errors import ContractRevert
from chain.types import AggregatorElected, RewardPaid, RoundFailed, ServingOnly, UpdateExcluded

C, A, V = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward


def ordered(addrs: list[str]) -> list[str]:
    return sorted(addrs, key=lambda a: int(a, 16))


def open_round(fed: Fed, updates: list[int], servers: list[int]) -> int:
    """Open a round: members `updates` commit an update, members `servers` serve only."""
    fed.admin.open_round()
    r = fed.view.current_round()
    for i in updates:
        fed.m[i].commit_update(r, sha(f"r{r}-update-{i}"), CID, 100 + i)
    for i in servers:
        res = fed.m[i].serve_round(r)
        assert [(type(e), e.round, e.member) for e in res.events] == [(ServingOnly, r, fed.addr(i))]
    return r


def elected(fed: Fed, r: int) -> int:
    fed.close_commits()
    return fed.m.index(fed.by_address(fed.view.aggregator_of(r)))


def settle(fed: Fed, r: int, agg: int, updates: list[int]) -> list[RewardPaid]:
    """The aggregator includes every update; every other committer approves; finalize."""
    fed.m[agg].submit_aggregate(r, sha(f"agg{r}"), CID, ordered([fed.addr(i) for i in updates]))
    for i in range(4):
        if i != agg:
            fed.m[i].vote(r, True)
    fin = fed.admin.finalize(r)
    # a server has no update to leave out
    assert [e for e in fin.events if isinstance(e, UpdateExcluded)] == []
    return [e for e in fin.events if isinstance(e, RewardPaid)]


def test_servers_vote_and_are_paid_as_verifiers_never_as_contributors(fed: Fed) -> None:
    r = open_round(fed, [0, 1], [2, 3])
    assert fed.info().n_committers == 4  # the last server closed the commit phase early
    assert fed.view.committers() == [fed.addr(i) for i in (0, 1, 2, 3)]
    assert fed.view.servers() == [fed.addr(2), fed.addr(3)]  # from storage: bit 255 of the slot
    agg = elected(fed, r)
    paid = settle(fed, r, agg, [0, 1])
    roles = {(fed.m.index(fed.by_address(e.to)), e.role) for e in paid}
    assert not {(2, "contributor"), (3, "contributor")} & roles
    expected = [C, C, 0, 0]
    for i in range(4):
        expected[i] += A if i == agg else V
    assert fed.balances() == expected


def test_a_server_is_elected_aggregator_and_paid_as_aggregator(fed: Fed) -> None:
    # one update and three servers: the draw is over all four committers; rounds until a server wins
    for _ in range(30):
        r = open_round(fed, [0], [1, 2, 3])
        agg = elected(fed, r)
        if agg != 0:
            break
        settle(fed, r, agg, [0])
    else:
        pytest.fail("no server was elected in 30 rounds (p = 1/4 each)")
    before = fed.balances()
    settle(fed, r, agg, [0])
    gained = [b - a for a, b in zip(before, fed.balances(), strict=True)]
    assert gained == [C + V if i == 0 else A if i == agg else V for i in range(4)]


def test_naming_a_server_in_included_or_invalid_reverts(fed: Fed) -> None:
    r = open_round(fed, [0, 1, 2], [3])
    agg = elected(fed, r)
    updates = ordered([fed.addr(i) for i in (0, 1, 2)])
    server = fed.addr(3)
    for preflight in (True, False):  # the client's preflight (diagnose) and the contract agree
        fed.m[agg].preflight = preflight
        with pytest.raises(ContractRevert, match="a serving-only committer has no update"):
            fed.m[agg].submit_aggregate(r, sha("agg"), CID, ordered([*updates, server]))
        with pytest.raises(ContractRevert, match="a serving-only committer has no update") as exc:
            fed.m[agg].submit_aggregate(r, sha("agg"), CID, updates, [server])
        assert (exc.value.tx_hash is None) == preflight
    fed.m[agg].preflight = True
    fed.m[agg].submit_aggregate(r, sha("agg"), CID, updates)


def test_serving_is_once_per_round_and_for_members_only(fed: Fed) -> None:
    fed.admin.open_round()
    r = fed.view.current_round()
    fed.m[0].serve_round(r)
    with pytest.raises(ContractRevert, match="already committed this round"):
        fed.m[0].serve_round(r)
    with pytest.raises(ContractRevert, match="already committed this round"):
        fed.m[0].commit_update(r, sha("late"), CID, 1)
    fed.m[1].commit_update(r, sha("u1"), CID, 1)
    with pytest.raises(ContractRevert, match="already committed this round"):
        fed.m[1].serve_round(r)
    with pytest.raises(ContractRevert, match="not a member"):
        fed.outsider.serve_round(r)
    with pytest.raises(ContractRevert, match="round is not open for commits"):
        fed.m[2].serve_round(r + 1)


def test_min_committers_counts_updates_only(fed: Fed) -> None:
    fed.pass_proposal(fed.m[0].propose_param("min_committers", 2), [1, 2])
    assert fed.view.params().min_committers == 2
    # one update and three servers: four committers, but one update: the round fails
    r = open_round(fed, [0], [1, 2, 3])
    fed.close_commits()
    assert fed.view.aggregator_of(r) is None
    with pytest.raises(ContractRevert, match="round is not in the aggregation phase"):
        fed.m[0].submit_aggregate(r, sha("agg"), CID, [fed.addr(0)])
    failed = fed.admin.advance(r).first(RoundFailed)
    assert isinstance(failed, RoundFailed) and failed.reason == "too few commits"
    # two updates and two servers: enough
    r = open_round(fed, [0, 1], [2, 3])
    fed.close_commits()
    elected_ev = fed.admin.advance(r).first(AggregatorElected)
    assert isinstance(elected_ev, AggregatorElected)
