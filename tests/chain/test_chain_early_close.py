"""The commit phase closes as soon as every active member has committed (the last commit elects the
aggregator in its own receipt); otherwise at the deadline, as before. And the contract at its
capacity: MAX_COMMITTERS members committing and a round finalizing, with the gas of each step."""

from __future__ import annotations

import pytest
from chain_testkit import CID, INITIAL_CID, INITIAL_SHA, PARAMS, Base, Fed, sha

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ContractRevert
from chain.profile import DEVNET
from chain.types import AggregatorElected, Phase, RewardPaid, RoundFinalized, UpdateCommitted
from localnet.anvil import rpc, set_balance
from localnet.chain import new_account

BLOCK_GAS_LIMIT = 30_000_000


def test_commit_phase_closes_when_every_member_committed_not_before(fed: Fed) -> None:
    fed.admin.open_round()
    r = fed.view.current_round()
    deadline = fed.info().commit_deadline
    for i in range(3):
        res = fed.m[i].commit_update(r, sha(f"early-{i}"), CID, 10)
        assert [type(e) for e in res.events] == [UpdateCommitted]  # 3 of 4: still open
    assert fed.info().phase == Phase.COMMIT
    assert fed.view.aggregator_of(r) is None
    with pytest.raises(ContractRevert, match="nothing to advance yet"):
        fed.admin.advance(r)
    last = fed.m[3].commit_update(r, sha("early-3"), CID, 10)
    assert [type(e) for e in last.events] == [UpdateCommitted, AggregatorElected]
    elected = last.first(AggregatorElected)
    assert isinstance(elected, AggregatorElected)
    closed_at = fed.view.chain_time()
    assert closed_at < deadline  # well before the deadline
    assert elected.aggregator == fed.addr(r % 4) and elected.attempt == 0  # the rotation, unchanged
    assert elected.aggregate_deadline == closed_at + PARAMS.aggregate_duration_s  # counted from the close
    info = fed.info()
    assert info.phase == Phase.AGGREGATE and info.aggregate_deadline == elected.aggregate_deadline
    assert fed.view.aggregator_of(r) == fed.addr(r % 4)
    with pytest.raises(ContractRevert, match="not open for commits"):
        fed.m[0].commit_update(r, sha("late"), CID, 1)
    # the rest of the round runs as before, without any clock warp
    agg = fed.by_address(elected.aggregator)
    agg.submit_aggregate(r, sha("early agg"), CID, sorted(fed.addr(i) for i in range(4)))
    voters = [c for c in fed.m if c is not agg]
    for c in voters[:2]:
        c.vote(r, True)
    fin = fed.outsider.finalize(r)
    assert isinstance(fin.first(RoundFinalized), RoundFinalized)
    assert fed.view.chain_time() < deadline  # the whole round ended before its commit deadline


def test_absent_member_round_closes_at_the_deadline(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])  # member 3 is absent
    deadline = fed.info().commit_deadline
    fed.warp_past(deadline - 1)
    with pytest.raises(ContractRevert, match="nothing to advance yet"):
        fed.admin.advance(r)
    fed.warp_past(deadline)
    res = fed.outsider.advance(r)
    elected = res.first(AggregatorElected)
    assert isinstance(elected, AggregatorElected) and elected.aggregator == fed.addr(r % 3)
    assert elected.aggregate_deadline == deadline + PARAMS.aggregate_duration_s  # from the deadline
    assert fed.info().phase == Phase.AGGREGATE


def test_removed_member_does_not_hold_the_round_open(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    assert fed.info().phase == Phase.COMMIT
    fed.admin.remove_member(fed.addr(3))  # the only member who had not committed
    assert fed.view.aggregator_of(r) == fed.addr(r % 3)  # the view already sees the phase closed
    res = fed.outsider.advance(r)  # anyone performs the due close, before the deadline
    assert isinstance(res.first(AggregatorElected), AggregatorElected)
    assert fed.view.chain_time() < fed.info().commit_deadline


def test_capacity_max_committers_commit_and_the_round_finalizes(base: Base) -> None:
    """MAX_COMMITTERS members: every one commits, the last commit elects, all are paid; gas per step."""
    url = base.anvil.rpc_url
    snapshot = rpc(url, "evm_snapshot", [])
    try:
        dep = deploy_federation(
            url, base.admin, PARAMS, INITIAL_SHA, INITIAL_CID, "tiny", sha("cfg"), DEVNET, w3=base.w3
        )
        boss = CoordinatorClient(url, dep.coordinator, base.admin, DEVNET, w3=base.w3)
        n = int(boss.contract.functions.MAX_COMMITTERS().call())
        assert n == 96  # masks are uint96
        wallets = [new_account() for _ in range(n)]
        clients = []
        for w in wallets:
            set_balance(url, w.address, 10**20)
            boss.add_member(w.address)
            clients.append(boss.with_wallet(w))
        boss.open_round()
        r = boss.current_round()
        gas: dict[str, int] = {}
        for i, c in enumerate(clients):
            res = c.commit_update(r, sha(f"cap-{i}"), CID, 100)
            gas["commitUpdate"] = max(gas.get("commitUpdate", 0), res.gas_used)
        assert isinstance(res.first(AggregatorElected), AggregatorElected)  # the 96th commit closed it
        assert boss.round_info().phase == Phase.AGGREGATE
        agg = next(c for c in clients if c.sender_address == boss.aggregator_of(r))
        everyone = sorted((w.address for w in wallets), key=lambda a: int(a, 16))
        gas["submitAggregate"] = agg.submit_aggregate(r, sha("cap agg"), CID, everyone).gas_used
        verifiers = [c for c in clients if c is not agg]
        for c in verifiers:
            res = c.vote(r, True)
            gas["vote"] = max(gas.get("vote", 0), res.gas_used)
        fin = boss.finalize(r)
        gas["finalize"] = fin.gas_used
        paid = [e for e in fin.events if isinstance(e, RewardPaid)]
        assert len({e.to for e in paid}) == n
        c_, a_, v_ = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward
        balances = [boss.token_balance(w.address) for w in wallets]
        assert sorted(balances) == sorted([c_ + a_] + [c_ + v_] * (n - 1))
        print(f"gas at {n} committers: {gas}")
        assert max(gas.values()) < BLOCK_GAS_LIMIT // 4  # every step fits a block with room to spare
    finally:
        rpc(url, "evm_revert", [snapshot])
