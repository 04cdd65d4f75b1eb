"""A flooding member against real hosts: its gossip is rate-limited and logged collapsed, its
adapter streams past the limit are refused at once, and honest peers get through meanwhile."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.pubsub.pb import rpc_pb2
from p2p_hosts import link, new_key, running_hosts, write_random

from p2p.errors import TransferRefused
from p2p.framing import FramedReader, encode_frame
from p2p.host import MedfedHost
from p2p.limits import FloodLimits
from p2p.messages import Announcement
from p2p.transfer import PROTOCOL_ID

NO_CUTOFF: dict[str, int] = {"cutoff_drops": 10**6, "cutoff_bytes": 1 << 30}  # to count every drop


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def all_p2p_warnings(caplog: pytest.LogCaptureFixture) -> int:
    """Warning lines of medfed's p2p loggers, from every host in the process."""
    return sum(r.name.startswith("p2p") and r.levelno >= logging.WARNING for r in caplog.records)


def p2p_warnings(caplog: pytest.LogCaptureFixture, peer_id: str, host: MedfedHost) -> list[str]:
    """Warning lines that `host`'s drop logs wrote naming `peer_id` (all hosts share one process)."""
    return [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "host", None) == host.peer_id
        and r.levelno >= logging.WARNING
        and peer_id in r.getMessage()
    ]


async def wait_until(cond: object, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.05)


async def settle(value: object, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until value() stops changing for `quiet` seconds (the flood has been processed)."""
    with trio.fail_after(timeout):
        last = value()  # type: ignore[operator]
        while True:
            await trio.sleep(quiet)
            now = value()  # type: ignore[operator]
            if now == last:
                return
            last = now


async def drain(host: MedfedHost, into: list[Announcement]) -> None:
    async for a, _ in host.announcements():
        into.append(a)


def test_well_signed_flood_is_rate_limited_and_honest_gossip_gets_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = FloodLimits(gossip_rate=1.0, gossip_burst=20, **NO_CUTOFF)
    flood = 400

    async def main() -> None:
        async with running_hosts([new_key() for _ in range(3)], tmp_path, limits=limits) as hosts:
            await link(hosts)  # 1 - 0 - 2 and 2 - 1: everyone hears everyone directly
            receiver, honest, flooder = hosts
            got: list[Announcement] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, receiver, got)
                start = time.monotonic()
                for i in range(flood):
                    await flooder.announce(Announcement.new("update", 1, sha(i), i, flooder.peer_id))
                    if i % 100 == 50:  # honest announcements in the middle of the flood
                        mine = Announcement.new("update", 1, sha(10_000 + i), 1, honest.peer_id)
                        await honest.announce(mine)
                totals = receiver.guard.drops.totals
                await wait_until(lambda: sum(a.peer_id == honest.peer_id for a in got) == 4)
                await settle(lambda: (len(got), totals["rate_limited"]))
                elapsed = time.monotonic() - start
                nursery.cancel_scope.cancel()
            delivered = sum(a.peer_id == flooder.peer_id for a in got)
            assert limits.gossip_burst <= delivered <= limits.gossip_burst + limits.gossip_rate * elapsed + 1
            # every message not delivered was dropped by the rate limit (a copy relayed by the
            # honest peer may be counted again)
            assert totals["rate_limited"] >= flood - delivered
            assert totals["invalid"] == totals["bad_signature"] == totals["blocked"] == 0
            # a few lines, not one per message: the first drop, then one summary
            assert len(p2p_warnings(caplog, flooder.peer_id, receiver)) == 1
            assert receiver.guard.drops.flush() >= 1
            lines = p2p_warnings(caplog, flooder.peer_id, receiver)
            assert len(lines) == 2 and "gossip messages from" in lines[1]
            assert int(lines[1].split()[1]) == totals["rate_limited"] - 1
            assert p2p_warnings(caplog, honest.peer_id, receiver) == []
            assert all_p2p_warnings(caplog) <= 4  # receiver 2, the honest host 1-2 (it saw the flood too)

    with caplog.at_level(logging.INFO, logger="p2p"):
        trio.run(main)


def test_garbage_flood_is_dropped_cheaply_and_logged_collapsed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = FloodLimits(invalid_rate=0.2, invalid_burst=10, max_message_bytes=512, **NO_CUTOFF)

    async def main() -> None:
        async with running_hosts([new_key() for _ in range(3)], tmp_path, limits=limits) as hosts:
            await link(hosts)
            receiver, honest, flooder = hosts
            flooder.pubsub.remove_topic_validator(flooder.topic)  # a modified node sends anything
            fid = flooder.host.get_id()
            for i in range(3):  # forged signatures, put on the wire by the router itself
                msg = rpc_pb2.Message(
                    from_id=fid.to_bytes(),
                    data=Announcement.new("update", 1, sha(i), 1, flooder.peer_id).encode(),
                    seqno=os.urandom(8),
                    topicIDs=[flooder.topic],
                    signature=os.urandom(64),
                )
                await flooder.gossipsub.publish(fid, msg)
            await trio.sleep(0.3)
            for _ in range(2):
                await flooder.pubsub.publish(flooder.topic, b"x" * 600)  # oversized
            await trio.sleep(0.3)
            for i in range(300):
                await flooder.pubsub.publish(flooder.topic, b'{"junk":%d}' % i)
            await honest.announce(Announcement.new("global", 1, sha(7), 7, honest.peer_id))
            a, sender = await receiver.announcements().receive()
            assert (a.sha256, sender) == (sha(7), honest.address)
            totals = receiver.guard.drops.totals
            await wait_until(lambda: sum(totals.values()) >= 305)
            assert totals["bad_signature"] == 3 and totals["oversized"] == 2
            assert totals["invalid"] >= 5  # the rest of the invalid budget, then the peer is cut off
            assert totals["blocked"] >= 250 and sum(totals.values()) == 305
            assert receiver.providers_of(sha(0)) == []
            assert len(p2p_warnings(caplog, flooder.peer_id, receiver)) == 1
            receiver.guard.drops.flush()
            lines = p2p_warnings(caplog, flooder.peer_id, receiver)
            assert len(lines) == 2 and "dropped 304 gossip messages from" in lines[1]
            # the honest peer forwarded none of it, so nothing is charged to it
            assert receiver.guard.forwarders.has(honest.host.get_id().to_bytes())
            assert p2p_warnings(caplog, honest.peer_id, receiver) == []
            assert all_p2p_warnings(caplog) <= 4  # receiver 2, the honest host 1-2 (it saw the flood too)

    with caplog.at_level(logging.INFO, logger="p2p"):
        trio.run(main)


def test_peer_that_keeps_flooding_is_cut_off_and_no_longer_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = FloodLimits(gossip_rate=1.0, gossip_burst=20, cutoff_drops=50)
    flood = 400

    async def main() -> None:
        async with running_hosts([new_key() for _ in range(3)], tmp_path, limits=limits) as hosts:
            await link(hosts)
            receiver, honest, flooder = hosts
            got: list[Announcement] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, receiver, got)
                for i in range(flood):
                    await flooder.announce(Announcement.new("update", 1, sha(i), i, flooder.peer_id))
                    if i % 50 == 0:
                        await trio.sleep(0)  # let the writers send as we go
                guard = receiver.guard
                await wait_until(lambda: guard.cut_offs == 1)
                assert guard.is_cut(flooder.host.get_id().to_bytes())
                await settle(lambda: (len(got), sum(guard.drops.totals.values())))
                # after the cut-off nothing more of it was read: far fewer than `flood` accounted for
                from_flooder = sum(a.peer_id == flooder.peer_id for a in got)
                assert from_flooder + guard.drops.totals["rate_limited"] < flood - 100
                # the honest peer is unaffected
                await honest.announce(Announcement.new("global", 1, sha(9999), 1, honest.peer_id))
                await wait_until(lambda: any(a.sha256 == sha(9999) for a in got))
                nursery.cancel_scope.cancel()
            cut = [m for m in p2p_warnings(caplog, flooder.peer_id, receiver) if m.startswith("cutting off")]
            assert len(cut) == 1

    with caplog.at_level(logging.INFO, logger="p2p"):
        trio.run(main)


def test_replayed_announcement_is_delivered_once_and_dropped_unverified(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_hosts([new_key() for _ in range(2)], tmp_path) as (receiver, sender):
            await link([receiver, sender])
            same = Announcement.new("update", 3, sha(3), 3, sender.peer_id).encode()
            for _ in range(50):  # new seqno each time: only the payload repeats
                await sender.pubsub.publish(sender.topic, same)
            await sender.announce(Announcement.new("update", 3, sha(4), 4, sender.peer_id))
            first = await receiver.announcements().receive()
            second = await receiver.announcements().receive()
            assert [first[0].sha256, second[0].sha256] == [sha(3), sha(4)]
            assert receiver.guard.drops.totals["duplicate"] == 49

    trio.run(main)


async def open_and_hold(host: MedfedHost, target: MedfedHost, sha256: str, held: list[object]) -> str:
    """Request a file and read only its header (the stream stays busy on the server); the status."""
    stream = await host.host.new_stream(target.host.get_id(), [TProtocol(PROTOCOL_ID)])
    await stream.write(encode_frame({"v": 1, "sha256": sha256, "max_bytes": 1 << 30}))
    head = await FramedReader(stream).read_frame()
    if head["status"] == "ok":
        held.append(stream)
    else:
        await stream.close()
    return str(head["status"])


def test_stream_limit_refuses_the_excess_at_once_while_an_honest_fetch_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = FloodLimits(max_streams_per_peer=2, max_streams=3)
    src = tmp_path / "global"
    file_sha = write_random(src, 8 << 20)  # larger than the Yamux window: a held stream stays open

    async def main() -> None:
        keys = [new_key() for _ in range(4)]
        async with running_hosts(keys, tmp_path, limits=limits) as (server, flooder, honest, late):
            for h in (flooder, honest, late):
                await h.connect(server.listen_multiaddrs())
            server.serve(file_sha, src)
            held: list[object] = []
            statuses: list[str] = []

            async def one() -> None:
                statuses.append(await open_and_hold(flooder, server, file_sha, held))

            with trio.fail_after(30):  # refusals come at once: nothing waits for a slot
                async with trio.open_nursery() as nursery:
                    for _ in range(12):
                        nursery.start_soon(one)
            assert sorted(statuses) == ["busy"] * 10 + ["ok"] * 2
            assert server.streams.active == 2 and server.streams.refused == 10
            assert len(p2p_warnings(caplog, flooder.peer_id, server)) == 1  # ten refusals, one line
            out = await honest.fetch(file_sha, [server.peer_id], tmp_path / "honest", timeout=20)
            assert hashlib.sha256(out.read_bytes()).hexdigest() == file_sha
            # the global bound: two held + one more held by the honest peer = 3, then busy for all
            assert await open_and_hold(honest, server, file_sha, held) == "ok"
            with pytest.raises(TransferRefused, match="busy"):
                await late.fetch(file_sha, [server.peer_id], tmp_path / "late", timeout=20)
            assert late.penalty(server.peer_id) == 0  # busy is not misbehaving
            for s in held:
                await s.reset()  # type: ignore[attr-defined]
            await wait_until(lambda: server.streams.active == 0)
            out = await late.fetch(file_sha, [server.peer_id], tmp_path / "late", timeout=20)
            assert out.is_file()
            server.stream_drops.flush()
            lines = p2p_warnings(caplog, flooder.peer_id, server)
            assert any("dropped 9 adapter streams from" in m for m in lines)

    with caplog.at_level(logging.INFO, logger="p2p"):
        trio.run(main)
