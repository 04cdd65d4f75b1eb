"""The chain keepalive (node.keepalive): when it is due, whose turn it is, and three members
sharing one silent chain: one keepalive per silent period, members taking turns."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from chain.profile import CYPHERIUM, DEVNET
from chain.types import TxResult
from node.config import TEMPLATE, load_config
from node.context import Node
from node.errors import ConfigError
from node.keepalive import DEFAULT_KEEPALIVE_S, due_after, keep_chain_live, keepalive_interval, place

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_auto_is_on_only_where_blocks_come_on_demand() -> None:
    assert keepalive_interval(None, CYPHERIUM) == DEFAULT_KEEPALIVE_S == 60.0
    assert keepalive_interval(None, DEVNET) == 0.0  # anvil unchanged
    assert keepalive_interval(0.0, CYPHERIUM) == 0.0
    assert keepalive_interval(90.0, DEVNET) == 90.0


def test_members_take_turns_by_block_number() -> None:
    # every member sees the same latest block, so they agree on the order without talking
    for block in range(6):
        assert sorted(place(rank, 3, block) for rank in range(3)) == [0, 1, 2]
    first = [next(r for r in range(3) if place(r, 3, b) == 0) for b in range(6)]
    assert first == [0, 1, 2, 0, 1, 2]  # the next block hands the next silence to the next member
    assert due_after(60, 0) == 60 and due_after(60, 2, 10) == 80
    assert place(5, 0, 7) == 0  # no members known yet: no division by zero


def _config(tmp_path: Path, line: str | None) -> Any:
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    if line is not None:
        text = text.replace('keepalive_s = "auto"', line)
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return load_config(p)


def test_config_auto_off_and_seconds(tmp_path: Path) -> None:
    assert _config(tmp_path, None).chain.keepalive_s is None
    assert _config(tmp_path, "").chain.keepalive_s is None  # absent = auto
    assert _config(tmp_path, "keepalive_s = 0").chain.keepalive_s == 0.0
    assert _config(tmp_path, "keepalive_s = 45").chain.keepalive_s == 45.0
    with pytest.raises(
        ConfigError, match=r"\[chain\] keepalive_s: must be \"auto\", 0 \(off\) or at least 10"
    ):
        _config(tmp_path, "keepalive_s = 5")
    with pytest.raises(ConfigError, match=r"\[chain\] keepalive_s: must be a number"):
        _config(tmp_path, 'keepalive_s = "often"')


class FakeChain:
    """A chain that makes a block only when a keepalive is sent (mined after `mine_s`)."""

    def __init__(self, silent_for: float, mine_s: float = 0.05) -> None:
        self.number = 10
        self.made = time.time() - silent_for
        self.mine_s = mine_s
        self.sent: list[tuple[str, int, float]] = []  # (sender, block it saw last, time sent)
        self.lock = threading.Lock()

    def client(self, address: str) -> Any:
        def latest_block() -> tuple[int, float]:
            with self.lock:
                return self.number, self.made

        def send_keepalive() -> TxResult:
            with self.lock:
                self.sent.append((address, self.number, time.time()))
            time.sleep(self.mine_s)
            with self.lock:
                self.number += 1
                self.made = time.time()
                return TxResult("0x" + "ab" * 32, self.number, 21_000, ())

        return SimpleNamespace(latest_block=latest_block, send_keepalive=send_keepalive)


def _node(client: Any, address: str, members: frozenset[str]) -> Node:
    none: Any = None
    return Node(none, address, "", client, none, none, none, none, none, none, none, members=members)


def test_three_members_send_one_keepalive_per_silence_in_turn() -> None:
    chain = FakeChain(silent_for=0.0)
    addresses = [f"0x{i:040x}" for i in (1, 2, 3)]
    nodes = [_node(chain.client(a), a, frozenset(addresses)) for a in addresses]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in nodes:
                nursery.start_soon(keep_chain_live, n, 0.4, 0.2)
            await trio.sleep(2.6)
            nursery.cancel_scope.cancel()

    trio.run(main)
    senders = [s for s, _, _ in chain.sent]
    seen = [b for _, b, _ in chain.sent]
    assert 4 <= len(senders) <= 6, chain.sent  # about one per 0.4 s of silence, not three
    assert len(set(seen)) == len(seen), "two members sent a keepalive for the same silence"
    assert set(senders) == set(addresses)  # the gas is shared
    assert all(a != b for a, b in itertools.pairwise(senders))


def test_a_member_that_is_down_only_delays_the_keepalive() -> None:
    chain = FakeChain(silent_for=0.0)
    addresses = [f"0x{i:040x}" for i in (1, 2, 3)]
    live = [_node(chain.client(a), a, frozenset(addresses)) for a in addresses[1:]]  # rank 0 is down

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in live:
                nursery.start_soon(keep_chain_live, n, 0.4, 0.2)
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()

    t0 = time.time()
    trio.run(main)
    assert chain.sent and {s for s, _, _ in chain.sent} <= set(addresses[1:])
    assert chain.sent[0][2] - t0 < 0.4 + 0.2 + 0.5  # the next in line stepped in


def test_off_returns_at_once() -> None:
    trio.run(keep_chain_live, _node(None, "0x" + "00" * 20, frozenset()), 0.0)
