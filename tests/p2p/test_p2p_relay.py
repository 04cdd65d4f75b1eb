"""Circuit relay v2 between real libp2p hosts (p2p/relay.py): a private member reachable only through
a member relay; the relay serves members only; the relayed connection is Noise-authenticated to
the destination's key end to end. (The firewall itself is tested in tests/e2e/test_netns.py.)"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from p2p_hosts import LOOPBACK, address_of, new_key, write_random

from p2p.errors import ConnectError
from p2p.host import MedfedHost, open_host
from p2p.relay import RelaySettings, is_circuit

TOPIC = "/medfed/test-relay/1"


async def _open(
    stack: AsyncExitStack, key: bytes, tmp: Path, name: str, members: set[str], relay: RelaySettings
) -> MedfedHost:
    return await stack.enter_async_context(
        open_host(
            key,
            LOOPBACK,
            TOPIC,
            lambda a: a.lower() in members,
            lambda a, s: True,
            tmp / name,
            request_timeout=10.0,
            reconnect_interval=0.5,
            relay=relay,
        )
    )


async def _wait(cond: object, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.05)


def test_private_member_is_reached_through_a_member_relay(tmp_path: Path) -> None:
    trio.run(_private_member_is_reached, tmp_path)


async def _private_member_is_reached(tmp_path: Path) -> None:
    keys = [new_key() for _ in range(4)]  # relay R, private P, dialer D, outsider X
    members = {address_of(k).lower() for k in keys[:3]}
    async with AsyncExitStack() as stack:
        r = await _open(stack, keys[0], tmp_path, "r", members, RelaySettings(serve=True))
        p = await _open(stack, keys[1], tmp_path, "p", members, RelaySettings(private=True, hole_punch=False))
        # no hole punching: on loopback it would succeed at once (tests/e2e/test_netns.py tests it
        # between firewalled namespaces); here the relayed path itself is under test
        d = await _open(stack, keys[2], tmp_path, "d", members, RelaySettings(hole_punch=False))
        x = await _open(stack, keys[3], tmp_path, "x", {address_of(keys[3]).lower()}, RelaySettings())
        assert p.advertised_multiaddrs() == []  # no relay yet: nothing worth publishing
        await p.connect(r.listen_multiaddrs())
        assert p.relay is not None
        await _wait(lambda: p.advertised_multiaddrs())
        [circuit] = p.advertised_multiaddrs()
        assert is_circuit(circuit) and circuit.startswith(r.listen_multiaddrs()[0])
        assert circuit.endswith(f"/p2p-circuit/p2p/{p.peer_id}")

        # D reaches P only through R; the bytes arrive intact and P's identity is its key
        assert await d.connect([circuit]) == [p.peer_id]
        sha = write_random(tmp_path / "upd.bin", 3_000_000)
        p.serve(sha, tmp_path / "upd.bin")
        got = await d.fetch(sha, [p.peer_id], tmp_path / "got", timeout=20)
        assert got.read_bytes() == (tmp_path / "upd.bin").read_bytes()
        conns = d.host.get_network().get_connections(p.host.get_id())
        assert conns and all("/p2p-circuit" in str(a) for c in conns for a in c.get_transport_addresses())

        # gossip crosses the relayed connection too
        await _wait(lambda: p.peer_id in d.connected_peers())

        # an outsider may not use the relay: neither reserve nor dial through it
        assert x.relay is not None
        await x.connect(r.listen_multiaddrs())
        assert not await x.relay.reserve(r.peer_id, r.listen_multiaddrs()[0])
        with pytest.raises(ConnectError):
            await x.connect([circuit], keep=False)
        assert r.relay is not None and r.relay.refused_hop >= 2
        assert p.peer_id not in x.connected_peers()
