"""The node's chain watcher (node.daemon._watch_chain) on a real anvil: a mined coordinator event
wakes the round machine at once; empty blocks wake nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from chain.wallet import load_wallet
from localnet.anvil import rpc
from localnet.chain import start_devnet, stop_devnet
from node.context import Node
from node.daemon import _watch_chain


def _node(client: Any, every: float) -> Node:
    """A Node with only what the watcher uses: the chain client and [rounds] watch_interval_s."""
    cfg: Any = SimpleNamespace(rounds=SimpleNamespace(watch_interval_s=every))
    none: Any = None
    return Node(cfg, "0x" + "00" * 20, "", client, none, none, none, none, none, none, none)


def test_a_coordinator_event_wakes_the_node_and_empty_blocks_do_not(tmp_path: Path) -> None:
    net = start_devnet(tmp_path / "dev", 1, block_time_s=None)
    try:
        password = net.password_file.read_text().strip()
        member = net.client(load_wallet(net.wallets[0], password))
        node = _node(net.client(), 0.05)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_chain, node)
                await trio.sleep(0.3)  # the watcher has read the latest block
                woken = node.wake_event()
                for _ in range(3):
                    rpc(net.rpc_url, "evm_mine", [])
                await trio.sleep(0.5)
                assert not woken.is_set(), "empty blocks woke the node"
                await trio.to_thread.run_sync(member.open_round)
                with trio.fail_after(5):
                    await woken.wait()
                assert not node.wake_event().is_set()  # a fresh event for the next wake
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        stop_devnet(tmp_path / "dev")


def test_watch_interval_zero_turns_the_watcher_off() -> None:
    node = _node(None, 0.0)
    trio.run(_watch_chain, node)  # returns at once, without touching the (absent) chain
