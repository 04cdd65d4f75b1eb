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


def test_one_circuit_ending_leaves_another_to_the_same_member_intact(tmp_path: Path) -> None:
    trio.run(_circuit_end_is_isolated, tmp_path)


async def _circuit_end_is_isolated(tmp_path: Path) -> None:
    """Two dialers reach one private member through one relay; the member hangs up on the first
    while the second downloads. py-libp2p's own relay pump then closed the circuit registered last
    for that destination (the second's) and reset its transfer mid-way."""
    keys = [new_key() for _ in range(4)]  # relay R, private P, dialers D1, D2
    members = {address_of(k).lower() for k in keys}
    async with AsyncExitStack() as stack:
        r = await _open(stack, keys[0], tmp_path, "r", members, RelaySettings(serve=True))
        p = await _open(stack, keys[1], tmp_path, "p", members, RelaySettings(private=True, hole_punch=False))
        d1, d2 = [
            await _open(stack, k, tmp_path, n, members, RelaySettings(hole_punch=False))
            for k, n in ((keys[2], "d1"), (keys[3], "d2"))
        ]
        await p.connect(r.listen_multiaddrs())
        await _wait(lambda: p.advertised_multiaddrs())
        [circuit] = p.advertised_multiaddrs()
        assert await d1.connect([circuit], keep=False) == [p.peer_id]
        assert await d2.connect([circuit], keep=False) == [p.peer_id]
        [conn2] = d2.host.get_network().get_connections(p.host.get_id())
        sha = write_random(tmp_path / "big.bin", 40_000_000)
        p.serve(sha, tmp_path / "big.bin")
        got: list[Path] = []

        async def download() -> None:
            got.append(await d2.fetch(sha, [p.peer_id], tmp_path / "got", max_bytes=50_000_000, timeout=60))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download)
            await trio.sleep(0.3)  # the download is under way
            await p.host.get_network().close_peer(d1.host.get_id())
        assert got and got[0].read_bytes() == (tmp_path / "big.bin").read_bytes()
        assert d2.host.get_network().get_connections(p.host.get_id()) == [conn2]  # not re-dialled
        assert not conn2.is_closed
