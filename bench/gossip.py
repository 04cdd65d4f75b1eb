"""Gossip latency of signed announcements across 5 hosts, each in its own process, on loopback.

    python bench/gossip.py [--quick] [--messages N] [--hosts N] [--spacing S]

Each host runs in its own process (as each institution would); they form a full mesh, then
take turns publishing announcements spaced 100 ms apart (announcements are rare: a few per
round). Every other host stamps when the announcement comes out of its validated, de-duplicated
channel; publish and receive stamps use the machine's wall clock (time.time(), shared by all
processes). Baseline, measured in the same run between two of the same processes: the round
trip of a 32-byte request/response on a direct libp2p stream. Ends with
`RESULT gossip_p50 <ms> ms baseline=<stream RTT p50 ms> ratio=<r>` (p95 printed above it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from eth_account import Account
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from p2p.host import MedfedHost, open_host
from p2p.messages import Announcement

ECHO = TProtocol("/medfed/bench-echo/1.0.0")
TOPIC = "/medfed/bench/1"


def sha_of(m: int) -> str:
    return hashlib.sha256(m.to_bytes(4, "big")).hexdigest()


# ------------------------------------------------------------------ worker process
async def echo_handler(stream: INetStream) -> None:
    try:
        while data := await stream.read(64):
            await stream.write(data)
    except Exception:
        return


async def rtts(h: MedfedHost, maddr: str, n: int) -> list[float]:
    info = info_from_p2p_addr(Multiaddr(maddr))
    await h.host.connect(info)
    stream = await h.host.new_stream(info.peer_id, [ECHO])
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await stream.write(b"x" * 32)
        got = b""
        while len(got) < 32:
            got += await stream.read(32 - len(got))
        out.append(time.perf_counter() - t0)
        await trio.sleep(0.01)
    await stream.close()
    return out


async def worker() -> None:
    def say(*parts: object) -> None:
        print(*parts, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-gossip-") as tmp:
        key = bytes(Account.create().key)
        async with open_host(
            key, ["/ip4/127.0.0.1/tcp/0"], TOPIC, lambda a: True, lambda a, s: True, Path(tmp)
        ) as h:
            h.host.set_stream_handler(ECHO, echo_handler)
            by_sha: dict[str, int] = {}

            async def receive() -> None:
                async for a, _ in h.announcements():
                    say("RECV", a.size, repr(time.time()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                say("READY", h.listen_multiaddrs()[0])
                stdin = trio.wrap_file(sys.stdin)
                async for line in stdin:
                    cmd, *args = line.split()
                    if cmd == "connect":
                        await h.connect(args)
                        say("OK")
                    elif cmd == "mesh":
                        await h.wait_for_topic_peers(int(args[0]), timeout=30)
                        say("OK")
                    elif cmd == "pub":
                        m = int(args[0])
                        by_sha[sha_of(m)] = m
                        say("SENT", m, repr(time.time()))
                        await h.announce(Announcement.new("update", 1, sha_of(m), m, h.peer_id))
                    elif cmd == "rtt":
                        values = await rtts(h, args[0], int(args[1]))
                        say("RTT", *[repr(v) for v in values])
                    elif cmd == "quit":
                        break
                nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ orchestrator
class Proc:
    def __init__(self) -> None:
        self.p = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.strip())

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self, word: str, timeout: float = 60) -> list[str]:
        deadline = time.time() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.time()))
            if line.split()[0] == word:
                return line.split()[1:]
            if line.startswith(("RECV", "SENT")):
                self.lines.put(line)  # keep for later, look further
                if time.time() > deadline:
                    raise TimeoutError(f"worker sent no {word}")
                time.sleep(0.001)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 messages instead of 200")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--spacing", type=float, default=0.1, help="seconds between announcements")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # libp2p logs redial attempts to peers that already left as errors; they are noise here
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    if args.worker:
        trio.run(worker)
        return
    n = 50 if args.quick else args.messages
    procs = [Proc() for _ in range(args.hosts)]
    try:
        addrs = [p.expect("READY")[0] for p in procs]
        for i, p in enumerate(procs[1:], start=1):
            p.send("connect " + " ".join(addrs[:i]))
            p.expect("OK")
        for p in procs:
            p.send(f"mesh {args.hosts - 1}")
            p.expect("OK")
        time.sleep(0.5)
        for m in range(n):
            procs[m % len(procs)].send(f"pub {m}")
            time.sleep(args.spacing)
        time.sleep(2.0)
        procs[0].send(f"rtt {addrs[1]} {max(50, n)}")
        rtt_ms = [float(v) * 1000 for v in procs[0].expect("RTT", timeout=120)]
        sent: dict[int, float] = {}
        recv: list[tuple[int, float]] = []
        for p in procs:
            while not p.lines.empty():
                kind, *rest = p.lines.get().split()
                if kind == "SENT":
                    sent[int(rest[0])] = float(rest[1])
                elif kind == "RECV":
                    recv.append((int(rest[0]), float(rest[1])))
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                p.send("quit")
        for p in procs:
            try:
                p.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.p.kill()
    expected = n * (args.hosts - 1)
    ms = [(t - sent[m]) * 1000 for m, t in recv if m in sent]
    if len(ms) < expected:
        print(f"WARNING: {expected - len(ms)} of {expected} deliveries missing")
    p50, p95 = percentile(ms, 0.5), percentile(ms, 0.95)
    base = statistics.median(rtt_ms)
    print(
        f"gossip latency over {len(ms)} deliveries ({args.hosts} host processes): "
        f"p50 {p50:.2f} ms  p95 {p95:.2f} ms  max {max(ms):.2f} ms"
    )
    print(f"direct stream round trip: p50 {base:.2f} ms  p95 {percentile(rtt_ms, 0.95):.2f} ms")
    print(f"RESULT gossip_p50 {p50:.2f} ms baseline={base:.2f} ratio={p50 / base:.2f}")


if __name__ == "__main__":
    main()
