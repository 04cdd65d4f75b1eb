"""The coordinator on the REAL Cypherium node, under both rule sets (istanbul, official-rules).

What differs from anvil and is checked here: deadlines in milliseconds, receipts that say
`status: 1` for reverted transactions (a refused call is detected by its missing event, with the
contract's reason even where the rules have no REVERT), blocks only while transactions are
pending (a deadline transition must be sent without any outside traffic), and rewards paid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from cypherium_kit import federation, in_parallel

from chain.client import CoordinatorClient
from chain.errors import ContractRevert
from chain.profile import CYPHERIUM
from chain.types import (
    DeployParams,
    MemberAdded,
    MemberRemoved,
    ParamChanged,
    Phase,
    ProposalCreated,
    ProposalStatus,
    RoundOpened,
    ServingOnly,
    TxResult,
    UpdateExcluded,
)
from localnet.cypherium import CypheriumNode

CID = "bafkrei" + "c" * 52
PARAMS = DeployParams(
    commit_duration_s=10,
    aggregate_duration_s=20,
    verify_duration_s=8,
    max_attempts=3,
    min_committers=1,
    contributor_reward=7 * 10**18 + 3,
    aggregator_reward=5 * 10**18 + 2,
    verifier_reward=10**18 + 1,
)


def sha(label: str) -> bytes:
    import hashlib

    return hashlib.sha256(label.encode()).digest()


def wait_quietly_past(client: CoordinatorClient, deadline: int, extra_s: float = 0.2) -> None:
    """Sleep until the wall clock passes `deadline` (chain ms) by `extra_s`, checking that no
    block is made meanwhile."""
    block = client.block_number()
    while time.time() * 1000 < deadline + extra_s * 1000:
        time.sleep(0.25)
    assert client.block_number() == block, "the chain was not quiet: something else sent a transaction"
    assert client.chain_time() < deadline, "the latest block is not stale: nothing to prove"


def by_address(members: list[CoordinatorClient], address: str | None) -> CoordinatorClient:
    return next(m for m in members if m.wallet is not None and m.wallet.address == address)


def commit_all(members: list[CoordinatorClient], r: int) -> None:
    """Commit from each of `members` at once (when they are every member, the last one to be mined
    closes the phase: its block's timestamp becomes the commit deadline)."""
    in_parallel(
        [lambda m=m, i=i: m.commit_update(r, sha(f"{r}-{i}"), CID, 100 + i) for i, m in enumerate(members)]
    )


def opened_deadline(opened: TxResult) -> int:
    """The commit deadline the round was opened with (RoundOpened)."""
    ev = opened.first(RoundOpened)
    assert isinstance(ev, RoundOpened)
    return ev.commit_deadline


def on_both(nodes: dict[str, CypheriumNode], scenario: Callable[[CypheriumNode], None]) -> None:
    """Run `scenario` on both rule sets at once (it mostly waits for blocks and deadlines);
    a failure names its rule set."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = {genesis: pool.submit(scenario, node) for genesis, node in nodes.items()}
    for genesis, future in futures.items():
        exc = future.exception()
        if exc is not None:
            raise AssertionError(f"--genesis {genesis}: {type(exc).__name__}: {exc}") from exc


def test_round_on_a_quiet_chain_detects_reverts_and_pays(cypherium_nodes: dict[str, CypheriumNode]) -> None:
    assert set(cypherium_nodes) == {"istanbul", "official-rules"}
    on_both(cypherium_nodes, round_detects_reverts_and_pays)


def test_late_vote_is_refused_and_advance_moves_a_quiet_chain(
    cypherium_nodes: dict[str, CypheriumNode],
) -> None:
    on_both(cypherium_nodes, late_vote_and_quiet_advance)


def round_detects_reverts_and_pays(cypherium: CypheriumNode) -> None:
    _, boss, everyone = federation(cypherium.rpc_url, PARAMS, 4, joiners=1)  # and join() works
    members, idle = everyone[:3], everyone[3]  # idle never commits: the deadline closes the phase
    assert boss.time_unit_ms and boss.params().commit_duration == 10_000  # ms on this chain
    opened = boss.open_round()
    r = opened.events[0].round  # type: ignore[attr-defined]
    block_ts = int(boss.w3.eth.get_block(opened.block_number)["timestamp"])
    assert boss.round_info().commit_deadline == block_ts + 10_000
    # two members commit the same hash: no duplicate-hash rule (issue 12, B6: a copy cannot block
    # its author; nodes exclude it by the author named inside the file)
    hashes = [sha(f"{r}-0"), sha(f"{r}-0"), sha(f"{r}-2")]
    in_parallel(
        [lambda m=m, h=h: m.commit_update(r, h, CID, 100) for m, h in zip(members, hashes, strict=True)]
    )
    assert len(boss.committers()) == 3

    # a duplicate commit sent past the preflight is mined, says status 1, and is still a failure
    dup = members[0]
    dup.preflight = False
    with pytest.raises(ContractRevert, match="already committed this round") as exc:
        dup.commit_update(r, sha("again"), CID, 1)
    assert exc.value.tx_hash is not None
    receipt = boss.w3.eth.get_transaction_receipt(exc.value.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and not receipt["logs"]
    limit = boss.w3.eth.get_transaction(exc.value.tx_hash)["gas"]  # type: ignore[arg-type]
    if cypherium.datadir.name.endswith("official-rules"):
        assert receipt["gasUsed"] == limit  # no REVERT: the invalid opcode takes all the gas
    else:
        assert receipt["gasUsed"] < limit  # REVERT refunds what is left
    dup.preflight = True
    assert len(boss.committers()) == 3

    # quiet chain: nobody sends anything until the commit deadline has passed on the wall clock;
    # the elected aggregator's own submission makes the block whose timestamp elects it
    info = boss.round_info()
    wait_quietly_past(boss, info.commit_deadline)
    # the aggregator is predicted from the seed (the hash of the last commit's block) before the
    # election is mined: its submission is refused unless the prediction is the contract's draw
    aggregator = by_address(members, boss.rotation_aggregator(r, 0))
    verifiers = [m for m in members if m is not aggregator]
    # issue 12: one update was found invalid (named in the submission), one was not obtained in
    # time (unavailable). The invalid one's author vetoes: at three committers one approval and
    # one rejection approve (B3: one vote never blames anyone)
    bad, absent = verifiers
    sub = aggregator.submit_aggregate(
        r, sha(f"agg{r}"), CID, [aggregator.sender_address], [bad.sender_address]
    )
    names = [type(e).__name__ for e in sub.events]
    assert names == ["ElectionSeed", "AggregatorElected", "AggregateSubmitted"]
    assert sub.events[2].invalid == (bad.sender_address,)  # type: ignore[attr-defined]
    in_parallel([lambda: absent.vote(r, True), lambda: bad.vote(r, False)])
    before = {m.sender_address: boss.token_balance(m.sender_address) for m in members}
    fin = boss.finalize(r)
    assert boss.is_finalized(r) and boss.global_adapter().sha256 == sha(f"agg{r}")
    excluded = {e.member: (e.reason, e.aggregator) for e in fin.events if isinstance(e, UpdateExcluded)}
    agg_addr = aggregator.sender_address
    assert excluded == {
        bad.sender_address: ("invalid", agg_addr),
        absent.sender_address: ("unavailable", agg_addr),
    }
    c, a, v = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward
    # the invalid update's author (and vetoer) forfeits the round; the unavailable one keeps its
    # verifier reward (to the wei)
    expected = {aggregator: c + a, bad: 0, absent: v}
    for m in members:
        assert boss.token_balance(m.sender_address) - before[m.sender_address] == expected[m]
    assert boss.token_balance(idle.sender_address) == 0


def late_vote_and_quiet_advance(cypherium: CypheriumNode) -> None:
    _, boss, members = federation(cypherium.rpc_url, PARAMS, 3)
    opened = boss.open_round()
    r = opened.events[0].round  # type: ignore[attr-defined]
    commit_all(members, r)  # every member: the last commit closes the phase early
    info = boss.round_info()
    last_block = boss.block_number()
    assert info.phase == Phase.COMMIT and info.commit_deadline < opened_deadline(opened)
    assert info.commit_deadline == int(boss.w3.eth.get_block(last_block)["timestamp"])
    # the election needs a later block than the last commit's (its hash is the seed): advance,
    # sent at once, makes that block
    predicted = boss.rotation_aggregator(r, 0)
    elected = boss.advance(r).events
    assert [type(e).__name__ for e in elected] == ["ElectionSeed", "AggregatorElected"]
    assert elected[0].seed_block == last_block  # type: ignore[attr-defined]
    assert boss.aggregator_of(r) == predicted
    aggregator = by_address(members, boss.aggregator_of(r))
    aggregator.submit_aggregate(r, sha("agg"), CID, [m.sender_address for m in members])
    late = next(m for m in members if m is not aggregator)
    # past the deadline by more than the clock-skew allowance: certain enough to refuse unsent
    wait_quietly_past(boss, boss.round_info().verify_deadline, CYPHERIUM.clock_skew_s + 0.2)
    with pytest.raises(ContractRevert, match="verify deadline passed") as exc:
        late.vote(r, True)  # refused by the preflight: nothing sent
    assert exc.value.tx_hash is None
    late.preflight = False
    with pytest.raises(ContractRevert, match="verify deadline passed") as exc:
        late.vote(r, True)  # mined without a VoteCast: detected, with the reason
    assert exc.value.tx_hash is not None
    assert not late.has_voted(late.sender_address)
    # no vote was cast by the deadline: advance disputes the attempt and elects the next one
    moved = boss.advance(r).events
    assert [type(e).__name__ for e in moved] == ["AttemptFailed", "AggregatorElected"]
    assert moved[0].reason == "disputed"  # type: ignore[attr-defined]
    info = boss.round_info()
    assert info.phase == Phase.AGGREGATE and info.attempt == 1
    # nobody was paid (the round is not finalized)
    assert all(boss.token_balance(m.sender_address) == 0 for m in members)


def test_serving_only_members_vote_and_are_paid_on_a_real_chain(
    cypherium_nodes: dict[str, CypheriumNode],
) -> None:
    """issue 20 on both rule sets: members without an update serve the round (serveRound), close
    the commit phase with the committer, vote and are paid as verifiers/aggregator only; a
    refused serveRound or a submission naming a server is detected, with the contract's reason."""
    on_both(cypherium_nodes, serving_on_a_real_chain)


def serving_on_a_real_chain(cypherium: CypheriumNode) -> None:
    _, boss, members = federation(cypherium.rpc_url, PARAMS, 3)
    trainer, servers = members[0], members[1:]
    opened = boss.open_round()
    r = opened.events[0].round  # type: ignore[attr-defined]
    trainer.commit_update(r, sha(f"{r}-0"), CID, 100)
    first = servers[0].serve_round(r)
    assert [(type(e), e.member) for e in first.events] == [(ServingOnly, servers[0].sender_address)]  # type: ignore[attr-defined]
    servers[0].preflight = False
    with pytest.raises(ContractRevert, match="already committed this round") as exc:
        servers[0].serve_round(r)  # mined (status 1) without a ServingOnly: detected, with the reason
    servers[0].preflight = True
    assert exc.value.tx_hash is not None
    servers[1].serve_round(r)
    info = boss.round_info()  # every member took part: the phase closed early
    assert info.n_committers == 3 and info.commit_deadline < opened_deadline(opened)
    boss.advance(r)
    aggregator = by_address(members, boss.aggregator_of(r))
    server = next(m for m in servers if m is not aggregator)
    aggregator.preflight = False
    with pytest.raises(ContractRevert, match="a serving-only committer has no update") as exc:
        aggregator.submit_aggregate(r, sha("agg"), CID, [trainer.sender_address, server.sender_address])
    aggregator.preflight = True
    assert exc.value.tx_hash is not None
    aggregator.submit_aggregate(r, sha("agg"), CID, [trainer.sender_address])
    voters = [m for m in members if m is not aggregator]
    in_parallel([lambda m=m: m.vote(r, True) for m in voters])
    fin = boss.finalize(r)
    assert [e for e in fin.events if isinstance(e, UpdateExcluded)] == []
    c, a, v = PARAMS.contributor_reward, PARAMS.aggregator_reward, PARAMS.verifier_reward
    for m in members:
        role = a if m is aggregator else v
        assert boss.token_balance(m.sender_address) == role + (c if m is trainer else 0)


def test_governance_rules_on_a_real_chain(cypherium_nodes: dict[str, CypheriumNode]) -> None:
    """issue 21 on both rule sets: a vote admits a member, a refused ballot is detected by its
    missing event (official-rules: all gas consumed, no reason from the chain), a change passed
    during a round waits for openRound, and a hand-over retires the coordinator."""
    on_both(cypherium_nodes, governance_on_a_real_chain)


def governance_on_a_real_chain(cypherium: CypheriumNode) -> None:
    dep, boss, everyone = federation(cypherium.rpc_url, PARAMS, 4)
    members, newcomer = everyone[:3], everyone[3]
    # (the 4th wallet was admitted by the constructor: vote it out first, then back in)
    assert len(boss.members()) == 4 and boss.deployer() == boss.sender_address
    assert not boss.is_member(boss.sender_address)  # the deployer is not a member and rules nothing
    with pytest.raises(ContractRevert, match="not a member"):
        boss.propose_add_member(boss.sender_address)
    out = members[0].propose_remove_member(newcomer.sender_address)
    pid = out.first(ProposalCreated).id  # type: ignore[union-attr]
    res = members[1].vote_proposal(pid, True)  # 2 of the 3 eligible (the target does not vote)
    assert isinstance(res.first(MemberRemoved), MemberRemoved) and len(boss.members()) == 3
    # one member cannot admit anyone alone; its second ballot, past the preflight, is mined
    # without effect (status 1) and the reason is worked out from the views
    pid = members[0].propose_add_member(newcomer.sender_address).first(ProposalCreated).id  # type: ignore[union-attr]
    with pytest.raises(ContractRevert, match="not a member"):
        newcomer.vote_proposal(pid, True)  # refused before sending
    members[0].preflight = False
    with pytest.raises(ContractRevert, match="already voted on this proposal") as exc:
        members[0].vote_proposal(pid, True)
    members[0].preflight = True
    assert exc.value.tx_hash is not None
    receipt = boss.w3.eth.get_transaction_receipt(exc.value.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and not receipt["logs"]
    assert not boss.is_member(newcomer.sender_address)
    res = members[1].vote_proposal(pid, True)
    assert isinstance(res.first(MemberAdded), MemberAdded) and boss.is_member(newcomer.sender_address)
    # a change passed during a round waits for the next openRound
    opened = boss.open_round()
    r = opened.events[0].round  # type: ignore[attr-defined]
    everyone_now = [*members, newcomer]
    pid = everyone_now[0].propose_param("verifier_reward", 3).first(ProposalCreated).id  # type: ignore[union-attr]
    in_parallel([lambda c=c: c.vote_proposal(pid, True) for c in everyone_now[1:3]])
    assert boss.proposal(pid).status == ProposalStatus.QUEUED
    assert boss.params().verifier_reward == PARAMS.verifier_reward
    wait_quietly_past(boss, opened_deadline(opened))
    assert [type(e).__name__ for e in boss.advance(r).events] == ["RoundFailed"]  # nobody committed
    res = boss.open_round()
    assert isinstance(res.first(ParamChanged), ParamChanged) and boss.params().verifier_reward == 3
    # hand-over to a successor (another coordinator): applied between rounds, retires this one
    nxt, _, _ = federation(cypherium.rpc_url, PARAMS, 1)
    r = boss.current_round()
    wait_quietly_past(boss, boss.round_info().commit_deadline)
    boss.advance(r)
    pid = everyone_now[0].propose_successor(nxt.coordinator).first(ProposalCreated).id  # type: ignore[union-attr]
    in_parallel([lambda c=c: c.vote_proposal(pid, True) for c in everyone_now[1:3]])
    assert boss.successor() == nxt.coordinator
    with pytest.raises(ContractRevert, match="the federation moved to its successor"):
        boss.open_round()
    boss.preflight = False
    with pytest.raises(ContractRevert, match="the federation moved to its successor") as exc:
        boss.open_round()
    assert exc.value.tx_hash is not None
    assert dep.coordinator != nxt.coordinator
