"""`medfed-node relay` (node/relay.py): a dedicated relay on a key of its own, not a member, that
relays members' connections only, the member list read from a real coordinator on anvil; real
libp2p hosts. A member behind it is reached through it; an outsider may not use it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from eth_account import Account

from chain.wallet import load_wallet
from localnet.chain import start_devnet, stop_devnet
from node.relay import serve_relay
from p2p.errors import ConnectError
from p2p.host import MedfedHost, open_host
from p2p.relay import RelaySettings

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


async def _host(stack: AsyncExitStack, key: bytes, tmp: Path, name: str, relay: RelaySettings) -> MedfedHost:
    return await stack.enter_async_context(
        open_host(key, LOOPBACK, "/medfed/t/1", lambda a: True, lambda a, s: True, tmp / name, relay=relay)
    )


def test_dedicated_relay_serves_members_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = start_devnet(tmp_path / "dev", 2, block_time_s=None)
    try:
        password = net.password_file.read_text().strip()
        a, b = (bytes(load_wallet(w, password).private_key) for w in net.wallets)
        relay_key, outsider = bytes(Account.create().key), bytes(Account.create().key)

        async def main() -> None:
            ready = trio.Event()
            async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
                nursery.start_soon(
                    serve_relay,
                    net.rpc_url,
                    net.coordinator,
                    relay_key,
                    LOOPBACK,
                    [],
                    RelaySettings(serve=True),
                    tmp_path / "relay",
                    ready,
                )
                with trio.fail_after(30):
                    await ready.wait()
                addr = (
                    capsys.readouterr()
                    .out.split("relay address (for the private sites' [p2p] relays): ")[1]
                    .split()[0]
                )
                private = await _host(stack, a, tmp_path, "a", RelaySettings(private=True, relays=(addr,)))
                with trio.fail_after(20):
                    while not private.advertised_multiaddrs():
                        await trio.sleep(0.1)
                [circuit] = private.advertised_multiaddrs()
                assert circuit.startswith(addr + "/p2p-circuit/")
                member = await _host(stack, b, tmp_path, "b", RelaySettings())
                assert await member.connect([circuit]) == [private.peer_id]
                stranger = await _host(stack, outsider, tmp_path, "x", RelaySettings())
                with pytest.raises(ConnectError):
                    await stranger.connect([circuit], keep=False)
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        stop_devnet(tmp_path / "dev")
