"""The commit phase closes as soon as every active member has committed: the last commit moves
the commit deadline to its own block's timestamp. The election waits for a LATER block (its seed is
the hash of the last commit's block, unreadable inside it): the first advance or submitAggregate
after it elects. Otherwise the phase closes at the deadline, as before. And the contract at its
capacity: MAX_COMMITTERS members committing and a round finalizing, with the gas of each step."""

from __future__ import annotations

import threading
import time

import pytest
from chain_testkit import CID, INITIAL_CID, INITIAL_SHA, PARAMS, Base, Fed, sha
from web3 import Web3

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ContractRevert
from chain.profile import DEVNET
from chain.types import (
    AggregateSubmitted,
    AggregatorElected,
    ElectionSeed,
    Phase,
    RewardPaid,
    RoundFinalized,
    UpdateCommitted,
)
from localnet.anvil import rpc, set_balance
from localnet.chain import new_account

BLOCK_GAS_LIMIT = 30_000_000


def expected_seed(fed: Fed, r: int, block: int, n: int) -> bytes:
    """Coordinator._electionSeed: keccak256(blockhash(block) || round || n)."""
    h = bytes(fed.base.w3.eth.get_block(block)["hash"])
    return bytes(Web3.solidity_keccak(["bytes32", "uint256", "uint256"], [h, r, n]))


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
    assert [type(e) for e in last.events] == [UpdateCommitted]  # no election in the closing tx
    closed_at = int(fed.base.w3.eth.get_block(last.block_number)["timestamp"])
    assert closed_at < deadline  # well before the deadline
    info = fed.info()
    assert info.phase == Phase.COMMIT and info.commit_deadline == closed_at  # closed: deadline moved
    with pytest.raises(ContractRevert, match="commit deadline passed"):
        fed.m[0].commit_update(r, sha("late"), CID, 1)  # refused by the preflight
    predicted = fed.view.rotation_aggregator(r, 0)  # the draw of the next block
    # the first transaction in a later block elects: anyone's advance
    res = fed.outsider.advance(r)
    assert [type(e) for e in res.events] == [ElectionSeed, AggregatorElected]
    seed, elected = res.first(ElectionSeed), res.first(AggregatorElected)
    assert isinstance(seed, ElectionSeed) and isinstance(elected, AggregatorElected)
    assert seed.seed_block == last.block_number and res.block_number > last.block_number
    assert seed.seed == expected_seed(fed, r, last.block_number, 4)
    assert seed.first_index == int.from_bytes(seed.seed, "big") % 4
    assert elected.aggregator == fed.view.committers()[seed.first_index] == predicted
    assert elected.attempt == 0
    assert elected.aggregate_deadline == closed_at + PARAMS.aggregate_duration_s  # from the close
    info = fed.info()
    assert info.phase == Phase.AGGREGATE and info.aggregate_deadline == elected.aggregate_deadline
    assert fed.view.aggregator_of(r) == elected.aggregator
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


def test_elected_aggregator_elects_itself_lazily_after_the_last_commit(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2, 3])
    agg = fed.by_address(fed.view.rotation_aggregator(r, 0))
    others = [c for c in fed.m if c is not agg]
    with pytest.raises(ContractRevert, match="not the elected aggregator"):
        others[0].submit_aggregate(r, sha("x"), CID, [fed.addr(0)])  # preflight
    res = agg.submit_aggregate(r, sha("lazy"), CID, sorted(fed.addr(i) for i in range(4)))
    assert [type(e) for e in res.events] == [ElectionSeed, AggregatorElected, AggregateSubmitted]
    assert fed.info().phase == Phase.VERIFY


def test_no_election_in_the_last_commits_block(fed: Fed) -> None:
    """An advance mined in the same block as the last commit cannot read that block's hash: it is
    mined without an event ("nothing to advance yet", diagnosed from the views at that block)."""
    r = fed.open_and_commit([0, 1, 2])
    url = fed.url
    rpc(url, "evm_setAutomine", [False])
    errors: list[BaseException] = []
    results: list[object] = []

    def send(fn: object) -> None:
        try:
            results.append(fn())  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(lambda: fed.m[3].commit_update(r, sha("c3"), CID, 1),))]
    threads.append(threading.Thread(target=send, args=(lambda: fed.outsider.advance(r),)))
    try:
        threads[0].start()
        while int(rpc(url, "eth_getBlockTransactionCountByNumber", ["pending"]), 16) < 1:
            time.sleep(0.05)
        threads[1].start()
        while int(rpc(url, "eth_getBlockTransactionCountByNumber", ["pending"]), 16) < 2:
            time.sleep(0.05)
        rpc(url, "evm_mine", [])
        for t in threads:
            t.join(timeout=60)
    finally:
        rpc(url, "evm_setAutomine", [True])
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    exc = errors[0]
    assert isinstance(exc, ContractRevert) and exc.function == "advance"
    assert "nothing to advance yet" in exc.reason and exc.tx_hash is not None
    assert fed.info().phase == Phase.COMMIT
    res = fed.outsider.advance(r)  # the next block elects
    assert [type(e) for e in res.events] == [ElectionSeed, AggregatorElected]


def test_absent_member_round_closes_at_the_deadline(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])  # member 3 is absent
    deadline = fed.info().commit_deadline
    fed.warp_past(deadline - 1)
    with pytest.raises(ContractRevert, match="nothing to advance yet"):
        fed.admin.advance(r)
    fed.warp_past(deadline)
    res = fed.outsider.advance(r)
    seed, elected = res.first(ElectionSeed), res.first(AggregatorElected)
    assert isinstance(seed, ElectionSeed) and isinstance(elected, AggregatorElected)
    assert elected.aggregator == fed.view.committers()[seed.first_index]
    assert elected.aggregate_deadline == deadline + PARAMS.aggregate_duration_s  # from the deadline
    assert fed.info().phase == Phase.AGGREGATE


def test_removal_voted_mid_round_does_not_close_the_round(fed: Fed) -> None:
    """issue 21: a removal passed during a round waits for the next openRound, so the member who
    had not committed still counts and the phase closes at its deadline."""
    r = fed.open_and_commit([0, 1, 2])
    fed.pass_proposal(fed.m[0].propose_remove_member(fed.addr(3)), [1])
    assert fed.view.is_member(fed.addr(3)) and fed.view.queued_count() == 1
    assert fed.view.aggregator_of(r) is None  # still open: member 3 may commit
    assert fed.info().phase == Phase.COMMIT


def test_capacity_max_committers_commit_and_the_round_finalizes(base: Base) -> None:
    """MAX_COMMITTERS members: every one commits, the last commit closes the phase, the aggregator's
    submission elects, all are paid; gas per step."""
    url = base.anvil.rpc_url
    snapshot = rpc(url, "evm_snapshot", [])
    try:
        n = 96  # Coordinator.MAX_COMMITTERS: masks are uint96
        wallets = [new_account() for _ in range(n)]
        for w in wallets:
            set_balance(url, w.address, 10**20)
        dep = deploy_federation(
            url,
            base.admin,
            PARAMS,
            INITIAL_SHA,
            INITIAL_CID,
            "tiny",
            sha("cfg"),
            DEVNET,
            members=[w.address for w in wallets],
            w3=base.w3,
        )
        boss = CoordinatorClient(url, dep.coordinator, base.admin, DEVNET, w3=base.w3)
        assert int(boss.contract.functions.MAX_COMMITTERS().call()) == n
        clients = [boss.with_wallet(w) for w in wallets]
        boss.open_round()
        r = boss.current_round()
        gas: dict[str, int] = {}
        for i, c in enumerate(clients):
            res = c.commit_update(r, sha(f"cap-{i}"), CID, 100)
            key = "commitUpdate (last)" if i == n - 1 else "commitUpdate"
            gas[key] = max(gas.get(key, 0), res.gas_used)
        info = boss.round_info()  # the 96th commit closed the phase (its deadline moved to now)
        assert info.phase == Phase.COMMIT and info.commit_deadline == boss.chain_time()
        agg = next(c for c in clients if c.sender_address == boss.rotation_aggregator(r, 0))
        everyone = sorted((w.address for w in wallets), key=lambda a: int(a, 16))
        sub = agg.submit_aggregate(r, sha("cap agg"), CID, everyone)  # elects lazily, then submits
        assert isinstance(sub.first(ElectionSeed), ElectionSeed)
        gas["submitAggregate + election"] = sub.gas_used
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
