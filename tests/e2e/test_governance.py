"""End to end (issue 21): no single key rules the federation. Four `medfed-node` processes on the
tiny model and a real anvil; three wallets are admitted at deployment, the fourth node starts
with --wait-for-admission. While rounds go on:

- a hostile member alone proposes to admit a Sybil and to remove another member: nothing passes;
- two members vote the fourth hospital in; it trains and is paid in the round that follows;
- two members vote the hostile member out; its node stops with one line, rounds go on without it;
- the members hand the federation over to a successor coordinator (same members, base model and
  LoRA config): every node follows it in its own process, saying so, and the first round opened on
  the successor finalizes with their updates; a restart with the old coordinator in medfed.toml
  goes straight to the successor, and the member voted out earlier (not a member of the successor)
  is refused with one line saying why.
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
from chain.events import EventReader
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
        self.may_exit: set[int] = {2}
        self.successor = ""
        self.next: ev.Deployment | None = None

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
                    self.next = nxt
                    self.ids["handover"] = created(send(m0.propose_successor, nxt.coordinator))
                    send(m1.vote_proposal, self.ids["handover"], True)
                    self.stage = 3
        elif self.stage == 3:
            # every node followed the successor and is ready there: the launcher opens its round 1
            if h.of(ev.Successor) and all(
                "following it" in log_text(fed, i) and log_text(fed, i).count(" ready (peer ") >= 2
                for i in (0, 1, 3)
            ):
                send(self.successor_client(fed, admin=True).open_round)
                self.stage = 4
        elif self.stage == 4:
            return 1 in {e.round for e in self.successor_events(fed) if isinstance(e, ev.RoundFinalized)}
        return False

    def successor_client(self, fed: F.Federation, admin: bool = False) -> CoordinatorClient:
        wallet = fed.devnet.load_admin() if admin else None
        return CoordinatorClient(fed.devnet.rpc_url, self.successor, wallet, fed.devnet.profile)

    def successor_events(self, fed: F.Federation) -> list[ev.ChainEvent]:
        assert self.next is not None
        return EventReader(self.successor_client(fed)).read(self.next.deploy_block)


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
        # the hand-over: every node followed the successor, saying so, and trained its first round
        (succ,) = h.of(ev.Successor)
        assert succ.coordinator == script.successor == client.successor()
        followed = f"over to coordinator {script.successor} (proposal {succ.proposal}): following it"
        for i in (0, 1, 3):
            assert fed.node_exit_code(i) != 2, f"node {i} stopped instead of following"
            assert followed in log_text(fed, i), f"node {i}"
            assert (fed.state_dirs[i] / "coordinators" / script.successor.lower() / "state.sqlite").is_file()
        later = script.successor_events(fed)
        (final,) = [e for e in later if isinstance(e, ev.RoundFinalized) and e.round == 1]
        committed = {e.member for e in later if isinstance(e, ev.UpdateCommitted) and e.round == 1}
        assert committed == {addrs[0], addrs[1], addrs[3]}
        included = {
            a
            for e in later
            if isinstance(e, ev.AggregateSubmitted) and e.round == 1 and e.attempt == final.attempt
            for a in e.included
        }
        assert included == committed
        # a restart with the old coordinator in medfed.toml goes straight to the successor; the
        # member voted out earlier is no member of the successor: refused with one line saying so
        marks = {i: len(log_text(fed, i)) for i in (0, 2)}
        fed.start_node(0)
        fed.start_node(2)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (
            fed.node_exit_code(2) is None or " ready (peer " not in log_text(fed, 0)[marks[0] :]
        ):
            assert fed.node_exit_code(0) is None, log_text(fed, 0)[marks[0] :]
            time.sleep(0.5)
        fed.stop_node(0)
        assert f"{script.successor}: following it" in log_text(fed, 0)[marks[0] :]
        assert fed.node_exit_code(2) == 2
        last = log_text(fed, 2)[marks[2] :].strip().splitlines()[-1]
        assert last.lower().startswith(
            f"medfed-node: error: the members handed the federation over to coordinator {script.successor}, "
            f"but {addrs[2]} is not one of its members".lower()
        ), last
    finally:
        down(fed.dir)
