"""End to end (issue 21): no single key rules the federation. Four `medfed-node` processes on the
tiny model and a real anvil; three wallets are admitted at deployment, the fourth node starts
with --wait-for-admission. While rounds go on:

- a hostile member alone proposes to admit a Sybil and to remove another member: nothing passes;
- two members vote the fourth hospital in; it trains and is paid in the round that follows;
- two members vote the hostile member out; its node stops with one line, rounds go on without it;
- the members hand the federation over to a successor coordinator: every node stops with one line
  naming it (nodes do not switch by themselves), and a restart is refused with the same line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from e2e_kit import History, expected_rewards, history, log_text, paid, run

from chain import types as ev
from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.errors import ChainError
from localnet import federation as F
from localnet.federation import down

pytestmark = pytest.mark.slow
SYBIL = "0x" + "5b" * 20


def send(call: Any, *args: Any) -> ev.TxResult:
    """A transaction from a wallet its node also sends from: retried on a nonce race."""
    for attempt in range(4):
        try:
            return call(*args)  # type: ignore[no-any-return]
        except ChainError as exc:
            if "nonce" not in str(exc) or attempt == 3:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def created(res: ev.TxResult) -> int:
    e = res.first(ev.ProposalCreated)
    assert isinstance(e, ev.ProposalCreated)
    return int(e.id)


class Script:
    """The test's moves, made from `until` as the chain history allows them."""

    def __init__(self) -> None:
        self.stage = 0
        self.ids: dict[str, int] = {}
        self.clients: list[CoordinatorClient] = []
        self.may_exit: set[int] = {2}  # grows when the hand-over is voted
        self.successor = ""

    def __call__(self, fed: F.Federation, h: History) -> bool:
        if not self.clients:
            self.clients = [fed.devnet.client(fed.devnet.load_wallet(i)) for i in range(3)]
        m0, m1, hostile = self.clients
        addrs = fed.devnet.addresses
        finalized = {e.round for e in h.of(ev.RoundFinalized)}
        if self.stage == 0 and 1 in finalized:
            self.ids["sybil"] = created(send(hostile.propose_add_member, SYBIL))
            self.ids["oust"] = created(send(hostile.propose_remove_member, addrs[0]))
            self.ids["admit"] = created(send(m0.propose_add_member, addrs[3]))
            send(m1.vote_proposal, self.ids["admit"], True)
            self.stage = 1
        elif self.stage == 1:
            added = [e for e in h.of(ev.MemberAdded) if e.member == addrs[3]]
            trained = {e.round for e in h.of(ev.UpdateCommitted) if e.member == addrs[3]}
            if added and trained & finalized:
                self.ids["remove"] = created(send(m0.propose_remove_member, addrs[2]))
                send(m1.vote_proposal, self.ids["remove"], True)
                self.stage = 2
        elif self.stage == 2:
            removed = [e for e in h.of(ev.MemberRemoved) if e.member == addrs[2]]
            if removed and fed.node_exit_code(2) is not None:
                after = {e.round for e in h.of(ev.RoundOpened) if e.block_number > removed[0].block_number}
                if after & finalized:
                    nxt = deploy_federation(
                        fed.devnet.rpc_url,
                        fed.devnet.load_admin(),
                        fed.devnet.params,
                        fed.devnet.initial_sha256,
                        fed.devnet.initial_cid,
                        fed.devnet.base_model,
                        fed.devnet.lora_config_hash,
                        fed.devnet.profile,
                        members=[addrs[0], addrs[1], addrs[3]],
                    )
                    self.successor = nxt.coordinator
                    self.may_exit.update({0, 1, 3})
                    self.ids["handover"] = created(send(m0.propose_successor, nxt.coordinator))
                    send(m1.vote_proposal, self.ids["handover"], True)
                    self.stage = 3
        elif self.stage == 3:
            return h.of(ev.Successor) != [] and all(fed.node_exit_code(i) is not None for i in (0, 1, 3))
        return False


def test_members_vote_a_hospital_in_and_a_hostile_one_out(tmp_path: Path) -> None:
    script = Script()
    fed, _ = run(
        tmp_path / "fed",
        4,
        12,
        {},
        restart_crashed=False,
        timeout_s=1200,
        commit_s=30,
        until=script,
        members=3,
        may_exit=script.may_exit,
    )
    try:
        h = history(fed)
        addrs = fed.devnet.addresses
        client = fed.client()
        # the hostile member alone passed nothing: no Sybil, nobody removed by it, nothing paid
        for key in ("sybil", "oust"):
            p = client.proposal(script.ids[key])
            assert p.status == ev.ProposalStatus.OPEN and p.yes == 0  # its own ballot left with it
        assert not client.is_member(SYBIL) and client.token_balance(SYBIL) == 0
        assert client.is_member(addrs[0])
        # the fourth hospital was voted in and trained in the round that followed its admission
        (added,) = [e for e in h.of(ev.MemberAdded) if e.member == addrs[3]]
        nxt = min(
            e.round
            for e in h.of(ev.RoundOpened)
            if (e.block_number, e.log_index) > (added.block_number, added.log_index)
        )
        assert addrs[3] in {e.member for e in h.of(ev.UpdateCommitted, nxt)}, f"round {nxt}"
        included = {
            a
            for e in h.of(ev.AggregateSubmitted, nxt)
            if e.attempt == h.final(nxt).attempt
            for a in e.included
        }
        assert addrs[3] in included
        assert paid(h, nxt).get(addrs[3].lower(), 0) > 0
        assert "admitted by the members' vote" in log_text(fed, 3)
        # the hostile member was voted out while rounds went on: its node stopped, saying why
        (removed,) = [e for e in h.of(ev.MemberRemoved) if e.member == addrs[2]]
        assert fed.node_exit_code(2) == 2
        assert "was removed from the federation by its members' vote" in log_text(fed, 2)
        later = [e.round for e in h.of(ev.RoundOpened) if e.block_number > removed.block_number]
        done = [r for r in later if any(f.round == r for f in h.of(ev.RoundFinalized))]
        assert done and all(addrs[2] not in {e.member for e in h.of(ev.UpdateCommitted, r)} for r in done)
        assert paid(h) == expected_rewards(h)
        # the hand-over: every node stopped, naming the successor; a restart is refused the same way
        (succ,) = h.of(ev.Successor)
        assert succ.coordinator == script.successor == client.successor()
        for i in (0, 1, 3):
            assert fed.node_exit_code(i) == 2
            assert f"handed this federation over to coordinator {script.successor}" in log_text(fed, i)
        fed.start_node(0)
        deadline = time.monotonic() + 120
        while fed.node_exit_code(0) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert fed.node_exit_code(0) == 2
        last = log_text(fed, 0).strip().splitlines()[-1]
        assert last.startswith("medfed-node: error: the members handed this federation over to coordinator")
    finally:
        down(fed.dir)
