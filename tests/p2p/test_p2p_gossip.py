"""Gossip between real hosts: complete bursts, dropped non-member and malformed messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio
from p2p_hosts import address_of, link, new_key, running_hosts

from p2p.host import MedfedHost
from p2p.messages import Announcement


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


async def collect(host: MedfedHost, n: int, timeout: float) -> list[tuple[Announcement, str]]:
    got: list[tuple[Announcement, str]] = []
    with trio.move_on_after(timeout):
        while len(got) < n:
            got.append(await host.announcements().receive())
    return got


def test_burst_of_200_from_10_peers_arrives_complete(tmp_path: Path) -> None:
    async def main() -> None:
        keys = [new_key() for _ in range(10)]
        async with running_hosts(keys, tmp_path) as hosts:
            await link(hosts, line=True)  # a chain: most messages cross several forwarding hops
            async with trio.open_nursery() as nursery:
                for i, h in enumerate(hosts):

                    async def burst(h: MedfedHost = h, i: int = i) -> None:
                        for j in range(20):
                            n = i * 100 + j
                            await h.announce(Announcement.new("update", 7, sha(n), n, h.peer_id))

                    nursery.start_soon(burst)
            for i, h in enumerate(hosts):
                got = await collect(h, 180, timeout=40)  # generous: CI machines are shared
                assert len(got) == 180, f"host {i} got {len(got)} of 180"
                senders = {addr for _, addr in got}
                assert senders == {address_of(k) for k in keys} - {h.address}
                assert {a.sha256 for a, _ in got} == {
                    sha(k * 100 + j) for k in range(10) if k != i for j in range(20)
                }
            # idempotent: a repeated announcement (new seqno, same content) is not delivered twice
            await hosts[1].announce(Announcement.new("update", 7, sha(100), 100, hosts[1].peer_id))
            await hosts[1].announce(Announcement.new("update", 7, sha(999), 999, hosts[1].peer_id))
            got = await collect(hosts[0], 2, timeout=1.5)
            assert [a.sha256 for a, _ in got] == [sha(999)]
            assert hosts[0].providers_of(sha(100)) == [hosts[1].peer_id]

    trio.run(main)


def test_non_member_and_malformed_messages_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        good = [new_key() for _ in range(3)]
        outsider, forger = new_key(), new_key()
        members = {address_of(k) for k in [*good, forger]}
        keys = [*good, outsider, forger]
        # each host judges membership by the same list; the outsider thinks it belongs
        judges = [members.__contains__] * 3 + [lambda a: True, members.__contains__]
        async with running_hosts(keys, tmp_path, is_member=judges) as hosts:
            await link(hosts)
            h0, h1, h2, out, forge = hosts
            await out.announce(Announcement.new("update", 1, sha(1), 1, out.peer_id))
            # a member that bypasses its own validator and sends junk / another peer's announcement
            forge.pubsub.remove_topic_validator(forge.topic)
            await forge.pubsub.publish(forge.topic, b"{not json")
            await forge.pubsub.publish(forge.topic, b'{"version":99}')
            await forge.pubsub.publish(
                forge.topic, Announcement.new("update", 1, sha(2), 2, h1.peer_id).encode()
            )
            await trio.sleep(0.5)
            await h2.announce(Announcement.new("aggregate", 1, sha(3), 3, h2.peer_id))
            got = await collect(h0, 2, timeout=1.5)
            assert [(a.kind, a.sha256, addr) for a, addr in got] == [("aggregate", sha(3), h2.address)]
            assert h0.providers_of(sha(1)) == [] and h0.providers_of(sha(2)) == []
            reasons = " | ".join(r for _, r in h0.dropped)
            assert "is not a member" in reasons
            assert "malformed" in reasons and "version" in reasons
            assert "was signed by" in reasons
            assert {p for p, _ in h0.dropped} <= {out.peer_id, forge.peer_id}

    trio.run(main)


def test_dropped_bootstrap_peer_is_reconnected(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hosts([new_key(), new_key()], tmp_path, reconnect_interval=0.2) as (a, b):
            await b.connect(a.listen_multiaddrs())
            assert a.peer_id in b.connected_peers()
            await a.host.disconnect(b.host.get_id())
            with trio.fail_after(5):
                while a.peer_id not in b.connected_peers():
                    await trio.sleep(0.05)

    trio.run(main)
