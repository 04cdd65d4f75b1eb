"""An honest round's p2p work, unflooded and then flooded by one member, in the same run.

    python bench/flood.py [--quick] [--rounds N] [--size-mb MB] [--no-compare]

Honest federation (one process, real libp2p hosts on loopback): an aggregator and 3
participants. A round: each participant serves and announces its update; the aggregator waits
for the three announcements (gossip), fetches the three updates at once, then serves and
announces the global; each participant waits for that announcement and fetches the global. The
round's wall time runs from the first announcement until every participant holds the global.

The flooder, a member in its own process (as it would be on its own machine), connects to all
four and, until stopped, repeats: 3,000 well-signed valid announcements and 3,000 well-signed
garbage messages as fast as it can, then a 1 s pause; meanwhile 250 tasks keep an adapter stream
open to the aggregator each, downloading its latest global (on `busy`, they retry after 50 ms).

Each configuration runs `--rounds` unflooded rounds, starts the flooder, waits until the
aggregator has dropped 300 of its messages (at most 20 s), then runs `--rounds` flooded rounds;
ratio = median flooded / median unflooded round wall time. A flooded round that fails or takes
over 60 s counts as inf. The honest process and the flooder are pinned to different CPUs (when
there are two), since on one machine the flooder's own CPU would otherwise slow the honest
hosts as no remote flooder can; `flood_cpu_ratio` is the same ratio of the honest process's CPU
seconds per round (the work the flood adds to honest nodes, less sensitive to a busy machine).

The default limits run first (`RESULT flood_round_ratio <ratio>`, `RESULT flood_cpu_ratio`),
then, unless --quick or --no-compare, the same with every limit lifted (as before issue 18:
`RESULT flood_round_ratio_unlimited <ratio>`). Warning lines the honest hosts logged from the
flooder's start to the end of the flooded rounds: `RESULT flood_log_lines <n>` (all four hosts).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from eth_account import Account
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from p2p.framing import FramedReader, encode_frame
from p2p.host import MedfedHost, open_host
from p2p.limits import FloodLimits
from p2p.messages import Announcement
from p2p.transfer import PROTOCOL_ID

TOPIC = "/medfed/bench-flood/1"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
UNLIMITED = FloodLimits(
    gossip_rate=1e9,
    gossip_burst=10**9,
    invalid_rate=1e9,
    invalid_burst=10**9,
    max_streams_per_peer=10**6,
    max_streams=10**6,
)
ROUND_LIMIT_S = 60.0
CPU: list[float] = []  # honest process CPU seconds of each round (all four hosts)
BURST = 3000
STREAMS = 250
KINDS = os.environ.get("FLOOD_KINDS", "gossip,streams").split(",")  # for experiments: one of them


def key() -> bytes:
    return bytes(Account.create().key)


# ------------------------------------------------------------------ flooder process
async def paced(h: MedfedHost, data: bytes) -> None:
    """Publish, waiting while our outbound queues are long (publish never yields; the writers must run)."""
    await h.pubsub.publish(TOPIC, data)
    while max((len(q) for q in h.pubsub.peer_queues.values()), default=0) > 200:
        await trio.sleep(0.005)


async def flood_gossip(h: MedfedHost, sent: list[int]) -> None:
    n = 0
    while True:
        for _ in range(BURST):
            n += 1
            fake = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
            await paced(h, Announcement.new("update", 1, fake, n, h.peer_id).encode())
            sent[0] += 1
        for i in range(BURST):
            await paced(h, b'{"junk":%d}' % i)
            sent[0] += 1
        await trio.sleep(1)


async def burn() -> None:
    while True:
        hashlib.sha256(os.urandom(1 << 16)).digest()
        await trio.sleep(0)


async def flood_stream(h: MedfedHost, target: ID, latest: list[str]) -> None:
    while True:
        try:
            stream = await h.host.new_stream(target, [TProtocol(PROTOCOL_ID)])
            try:
                await stream.write(encode_frame({"v": 1, "sha256": latest[0], "max_bytes": 1 << 30}))
                reader = FramedReader(stream)
                head = await reader.read_frame()
                if head.get("status") == "ok":
                    while await reader.read_some(1 << 20):
                        pass
                    continue
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
        except (StreamEOF, Exception):
            pass
        await trio.sleep(0.05)


async def follow(h: MedfedHost, aggregator: str, latest: list[str]) -> None:
    async for a, _ in h.announcements():
        if a.peer_id == aggregator and a.kind == "global":
            latest[0] = a.sha256


async def flooder(addrs: list[str], target_sha: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_host(key(), LOOPBACK, TOPIC, lambda a: True, lambda a, s: True, Path(tmp)) as h:
            await h.connect(addrs)
            await h.wait_for_topic_peers(len(addrs), timeout=30)
            h.pubsub.remove_topic_validator(TOPIC)  # a modified node sends anything
            target = ID.from_base58(addrs[0].rsplit("/p2p/", 1)[1])
            latest = [target_sha]
            sent = [0]
            print("READY", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, h, target.to_base58(), latest)
                if "burn" in KINDS:  # control: a busy flooder that sends nothing
                    nursery.start_soon(burn)
                if "gossip" in KINDS:
                    nursery.start_soon(flood_gossip, h, sent)
                for _ in range(STREAMS if "streams" in KINDS else 0):
                    nursery.start_soon(flood_stream, h, target, latest)


# ------------------------------------------------------------------ honest federation
class Files:
    """Distinct files of one size, cheap to make: a shared random body behind a unique prefix."""

    def __init__(self, dir: Path, size: int) -> None:
        self.dir = dir
        self.body = os.urandom(size - 16)
        self.n = 0

    def new(self) -> tuple[str, Path]:
        self.n += 1
        data = self.n.to_bytes(16, "big") + self.body
        path = self.dir / f"file{self.n}"
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest(), path


async def provided(h: MedfedHost, sha: str) -> list[str]:
    while not (p := h.providers_of(sha)):
        await trio.sleep(0.01)
    return p


async def one_round(hosts: list[MedfedHost], r: int, files: Files, tmp: Path) -> float:
    agg, parts = hosts[0], hosts[1:]
    updates = [files.new() for _ in parts]
    glob_sha, glob_path = files.new()
    size = glob_path.stat().st_size
    start = time.monotonic()
    cpu = time.process_time()
    for p, (sha, path) in zip(parts, updates, strict=True):
        p.serve(sha, path)
        await p.announce(Announcement.new("update", r, sha, size, p.peer_id))

    async def fetch(h: MedfedHost, sha: str) -> None:
        await h.fetch(sha, await provided(h, sha), tmp / f"r{r}-{h.peer_id[-6:]}", timeout=60)

    async with trio.open_nursery() as nursery:
        for sha, _ in updates:
            nursery.start_soon(fetch, agg, sha)
    agg.serve(glob_sha, glob_path)
    await agg.announce(Announcement.new("global", r, glob_sha, size, agg.peer_id))
    async with trio.open_nursery() as nursery:
        for p in parts:
            nursery.start_soon(fetch, p, glob_sha)
    CPU.append(time.process_time() - cpu)
    return time.monotonic() - start


async def bounded_round(hosts: list[MedfedHost], r: int, files: Files, tmp: Path) -> float:
    """A flooded round; inf if it fails or takes over ROUND_LIMIT_S (a federation without limits can)."""
    try:
        with trio.fail_after(ROUND_LIMIT_S):
            return await one_round(hosts, r, files, tmp)
    except Exception as exc:
        print(f"  round {r} failed under the flood: {exc!r:.200}")
        CPU.append(math.inf)
        return math.inf


def pin(cpu: int) -> None:
    """Keep this process on one CPU (the flooder on another): two machines, as far as two CPUs go."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


async def drain(h: MedfedHost) -> None:
    async for _ in h.announcements():
        pass


class Counter(logging.Handler):
    """Counts the warning lines (and their bytes) logged while `counting` is set."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counting = False
        self.lines = 0
        self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.counting:
            self.lines += 1
            self.bytes += len(record.getMessage()) + 60  # + a timestamp, level and logger name


async def federation(
    limits: FloodLimits, rounds: int, size: int, counter: Counter
) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        files = Files(tmp, size)
        keys = [key() for _ in range(4)]
        async with trio.open_nursery() as nursery:
            hosts = []
            for i, k in enumerate(keys):
                cm = open_host(
                    k, LOOPBACK, TOPIC, lambda a: True, lambda a, s: True, tmp / f"s{i}", limits=limits
                )
                hosts.append(await nursery_enter(nursery, cm))
            for i, h in enumerate(hosts[1:], start=1):
                await h.connect([a for g in hosts[:i] for a in g.listen_multiaddrs()])
            for h in hosts:
                await h.wait_for_topic_peers(3, timeout=30)
                nursery.start_soon(drain, h)
            plain = [await one_round(hosts, r, files, tmp) for r in range(rounds)]
            last_global = files.new()[0]
            hosts[0].serve(last_global, files.dir / f"file{files.n}")
            addrs = [hosts[0].listen_multiaddrs()[0], *(h.listen_multiaddrs()[0] for h in hosts[1:])]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--flooder", last_global, *addrs],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # its own libp2p complains about every refusal
                text=True,
                preexec_fn=lambda: pin(1),
            )
            try:
                assert proc.stdout is not None
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                if line.strip() != "READY":
                    raise RuntimeError(f"flooder did not start: {line!r}")
                counter.counting = True
                with trio.move_on_after(20):  # until the flood is felt (or 20 s)
                    while "gossip" in KINDS and sum(hosts[0].guard.drops.totals.values()) < 300:
                        await trio.sleep(0.1)
                await trio.sleep(1)
                flooded = [await bounded_round(hosts, rounds + r, files, tmp) for r in range(rounds)]
                counter.counting = False
                agg = hosts[0]
                dropped, cut, refused = dict(agg.guard.drops.totals), agg.guard.cut_offs, agg.streams.refused
                print(f"  aggregator: dropped gossip {dropped}, cut off {cut}, refused {refused} streams")
            finally:
                proc.kill()
                proc.wait()
            nursery.cancel_scope.cancel()
    return plain, flooded


async def nursery_enter(nursery: trio.Nursery, cm: object) -> MedfedHost:
    """Enter an async context manager in a task of `nursery`, return what it yields."""
    send, recv = trio.open_memory_channel[MedfedHost](1)

    async def hold() -> None:
        async with cm as h:  # type: ignore[attr-defined]
            await send.send(h)
            await trio.sleep_forever()

    nursery.start_soon(hold)
    return await recv.receive()


def run(name: str, limits: FloodLimits, rounds: int, size: int) -> float:
    counter = Counter()
    CPU.clear()
    logging.getLogger().addHandler(counter)
    try:
        plain, flooded = trio.run(federation, limits, rounds, size, counter)
    finally:
        logging.getLogger().removeHandler(counter)
    ratio = statistics.median(flooded) / statistics.median(plain)
    base, worse = statistics.median(plain), statistics.median(flooded)
    print(
        f"{name}: unflooded rounds {[round(x, 2) for x in plain]} s, "
        f"flooded {[round(x, 2) for x in flooded]} s"
    )
    print(f"RESULT {name} {ratio:.2f} baseline={base:.2f}s flooded={worse:.2f}s")
    cpu_plain, cpu_flooded = statistics.median(CPU[:rounds]), statistics.median(CPU[rounds:])
    cpu = name.replace("round_ratio", "cpu_ratio")
    print(f"RESULT {cpu} {cpu_flooded / cpu_plain:.2f} baseline={cpu_plain:.2f}s flooded={cpu_flooded:.2f}s")
    lines = name.replace("round_ratio", "log_lines")
    print(f"RESULT {lines} {counter.lines} lines ({counter.bytes} bytes) from 4 honest hosts while flooded")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2+2 rounds of 4 MB, default limits only")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size-mb", type=float, default=16.0)
    parser.add_argument("--no-compare", action="store_true", help="skip the run without limits")
    parser.add_argument("--flooder", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR if args.flooder else logging.WARNING)
    logging.getLogger().addHandler(logging.NullHandler())
    if args.flooder:
        trio.run(flooder, args.flooder[1:], args.flooder[0])
        return
    rounds, size = (2, 4.0) if args.quick else (args.rounds, args.size_mb)
    pin(0)
    run("flood_round_ratio", FloodLimits(), rounds, int(size * (1 << 20)))
    if not (args.quick or args.no_compare):
        run("flood_round_ratio_unlimited", UNLIMITED, rounds, int(size * (1 << 20)))


if __name__ == "__main__":
    main()
