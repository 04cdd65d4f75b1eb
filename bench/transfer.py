"""Adapter transfer throughput over libp2p (TCP + Noise + Yamux) vs a plain TCP socket copy.

    python bench/transfer.py [--quick] [--repeats N] [--netns]

A provider process serves random files of 35 MB and 140 MB (fp32 rank-16 adapters of a
~1.7B model are ~70 MB) both over `/medfed/adapter/1.0.0` and over a bare TCP socket on
127.0.0.1; this process downloads each, writing to disk and hashing in both cases, so the
ratio isolates the libp2p stack (Noise encryption, Yamux framing, pure-Python I/O).
Ends with `RESULT transfer_140mb <MB/s> MB/s baseline=<tcp MB/s> ratio=<libp2p/tcp>`.

`--netns` (root; issue 19): three network namespaces on a bridge (localnet/netns.py): a relay
(a member with `[p2p] relay = true`), the provider and the fetcher, each its own process. The
fetcher downloads the file from the provider directly, then, once the provider is behind the
firewall (every inbound connection dropped), through the relay (circuit relay v2; Noise end to
end), and prints the CPU ms per MB of the sender, the relay and the receiver for each. Ends with
`RESULT relayed_transfer_140mb <MB/s> MB/s baseline=<direct MB/s> ratio=<relayed/direct>`.

`MEDFED_WIRE=off` in the environment (either mode) measures py-libp2p's own Yamux and Noise I/O,
without p2p/wire.py (docs/p2p.md, section 2b).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
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

from p2p.host import open_host
from p2p.relay import RelaySettings

MB = 1_000_000
CHUNK = 1 << 20


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


# ------------------------------------------------------------------ provider process
def serve_tcp(files: dict[str, Path]) -> int:
    """Bare TCP server: request = sha256 hex + '\\n', response = the file bytes, then close."""
    srv = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            with conn, conn.makefile("rb") as r:
                sha = r.readline().strip().decode()
                with open(files[sha], "rb") as f:
                    while chunk := f.read(CHUNK):
                        conn.sendall(chunk)

    threading.Thread(target=loop, daemon=True).start()
    return int(srv.getsockname()[1])


async def provider(paths: list[str]) -> None:
    files: dict[str, Path] = {}
    for item in paths:
        sha, _, path_str = item.partition("=")
        files[sha] = Path(path_str)
    tcp_port = serve_tcp(files)
    key = bytes(Account.create().key)
    store = Path(tempfile.mkdtemp(prefix="bench-provider-"))
    async with open_host(
        key, ["/ip4/127.0.0.1/tcp/0"], "/medfed/bench/1", lambda a: True, lambda a, s: True, store
    ) as host:
        for sha, path in files.items():
            host.serve(sha, path)
        print("READY", host.listen_multiaddrs()[0], tcp_port, flush=True)
        # exit when the parent closes our stdin
        await trio.to_thread.run_sync(sys.stdin.read)


# ------------------------------------------------------------------ --netns: processes in namespaces
async def relay_proc(listen: str) -> None:
    """A member relay: serves HOP (members = everyone here), nothing else."""
    key = bytes(Account.create().key)
    store = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    async with open_host(
        key,
        [listen],
        "/medfed/bench/1",
        lambda a: True,
        lambda a, s: False,
        store,
        relay=RelaySettings(serve=True, hole_punch=False),
    ) as host:
        print("READY", host.listen_multiaddrs()[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def private_provider(listen: str, relay: str, paths: list[str]) -> None:
    """The provider: listens on its own address, and holds a reservation on `relay`."""
    key = bytes(Account.create().key)
    store = Path(tempfile.mkdtemp(prefix="bench-provider-"))
    async with open_host(
        key,
        [listen],
        "/medfed/bench/1",
        lambda a: True,
        lambda a, s: True,
        store,
        relay=RelaySettings(private=True, relays=(relay,), hole_punch=False),
    ) as host:
        for item in paths:
            sha, _, path_str = item.partition("=")
            host.serve(sha, Path(path_str))
        await host.connect([relay])
        with trio.fail_after(30):
            while not host.advertised_multiaddrs():
                await trio.sleep(0.1)
        print("READY", host.listen_multiaddrs()[0], host.advertised_multiaddrs()[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def fetch_once(listen: str, maddr: str, sha: str, size: int, dest_dir: Path) -> tuple[float, float]:
    """One download of `sha` from `maddr` (direct or /p2p-circuit) by a fresh host:
    (seconds, CPU seconds this process spent in the download)."""
    key = bytes(Account.create().key)
    dest_dir.mkdir(parents=True, exist_ok=True)
    async with open_host(
        key,
        [listen],
        "/medfed/bench/1",
        lambda a: True,
        lambda a, s: True,
        dest_dir / "store",
        relay=RelaySettings(hole_punch=False),  # measure the relay, not a punched connection
    ) as host:
        await host.connect([maddr], keep=False)
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = await host.fetch(sha, [maddr], dest_dir, max_bytes=size, timeout=120)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out.unlink()
    return elapsed, cpu


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds a process has used so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_netns(sizes: list[int], repeats: int) -> None:
    """Direct vs relayed between namespaces (see the module docstring): four namespaces on a
    bridge: 0 the relay, 1 an open provider, 2 a firewalled provider (reservation on the relay),
    3 the fetcher. Direct and relayed downloads alternate, so a busy machine slows both alike."""
    from localnet import netns

    netns.check_available(firewalled=1)
    with tempfile.TemporaryDirectory(prefix="bench-netns-") as tmp_s:
        tmp = Path(tmp_s)
        os.chmod(tmp, 0o755)
        net = netns.plan(tmp, 4, 0)
        netns.create(tmp, net)
        for rule in netns.FIREWALL:  # provider 2 accepts no inbound connection
            subprocess.run([*net.exec_prefix(2), "iptables", "-A", "INPUT", *rule], check=True)
        procs: list[subprocess.Popen[str]] = []

        def start(i: int, *args: str) -> list[str]:
            p = subprocess.Popen(
                [*net.exec_prefix(i), sys.executable, __file__, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            assert p.stdout is not None
            ready = p.stdout.readline().split()
            assert ready and ready[0] == "READY", f"{args[0]} failed to start: {ready}"
            return ready[1:]

        def args(size: int, i: int) -> list[str]:
            return [shas[size], str(size), str(tmp / f"dl-{i}")]

        def fetch(maddr: str, size: int, i: int, sender: int) -> tuple[float, dict[str, float]]:
            """(seconds, CPU seconds of the sender, the relay and the receiver (the fetcher, during
            its download; the others from its start to its end))."""
            before = [_cpu_s(p.pid) for p in procs]
            r = subprocess.run(
                [
                    *net.exec_prefix(3),
                    sys.executable,
                    __file__,
                    "--fetch",
                    net.listen(3),
                    maddr,
                    *args(size, i),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            if r.returncode != 0:
                raise SystemExit(f"the fetch from {maddr} failed (its error above)")
            elapsed, fetcher_cpu = (float(x) for x in r.stdout.split()[-2:])
            used = [_cpu_s(p.pid) - b for p, b in zip(procs, before, strict=True)]
            return elapsed, {"sender": used[sender], "relay": used[0], "receiver": fetcher_cpu}

        try:
            shas = {size: make_file(tmp / f"src-{size}", size) for size in sizes}
            files = [f"{shas[s]}={tmp / f'src-{s}'}" for s in sizes]
            [relay] = start(0, "--relay-proc", net.listen(0))
            direct, _ = start(1, "--private-serve", net.listen(1), relay, *files)
            _, circuit = start(2, "--private-serve", net.listen(2), relay, *files)
            results = {}
            for size in sizes:
                d_runs, r_runs = [], []
                for i in range(repeats):
                    d_runs.append(fetch(direct, size, i, sender=1))
                    r_runs.append(fetch(circuit, size, i, sender=2))
                d_rate = size / MB / statistics.median(t for t, _ in d_runs)
                r_rate = size / MB / statistics.median(t for t, _ in r_runs)
                results[size] = (d_rate, r_rate)
                print(
                    f"{size // MB:>4} MB  direct {d_rate:7.1f} MB/s   relayed {r_rate:7.1f} MB/s   "
                    f"ratio {r_rate / d_rate:.3f}   (median of {repeats}, namespaces on a bridge)",
                    flush=True,
                )
                for name, runs in (("direct", d_runs), ("relayed", r_runs)):
                    mb = size / MB
                    cpu = {k: statistics.median(c[k] for _, c in runs) * 1000 / mb for k in runs[0][1]}
                    print(
                        f"       CPU ms/MB {name:<7}  sender {cpu['sender']:5.1f}  "
                        f"relay {cpu['relay']:5.1f}  receiver {cpu['receiver']:5.1f}  "
                        f"total {sum(cpu.values()):5.1f}",
                        flush=True,
                    )
        finally:
            for p in procs:
                if p.stdin:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            netns.teardown(tmp, net.tag)
    big = sizes[-1]
    d_rate, r_rate = results[big]
    name = f"relayed_transfer_{big // MB}mb"
    print(f"RESULT {name} {r_rate:.1f} MB/s baseline={d_rate:.1f} ratio={r_rate / d_rate:.3f}")


# ------------------------------------------------------------------ measuring side
def tcp_fetch(port: int, sha: str, dest: Path) -> float:
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port)) as s, open(dest, "wb") as f:
        s.sendall(sha.encode() + b"\n")
        while chunk := s.recv(CHUNK):
            f.write(chunk)
            h.update(chunk)
    elapsed = time.perf_counter() - t0
    assert h.hexdigest() == sha, "TCP baseline copy corrupted"
    return elapsed


async def p2p_fetch(maddr: str, sha: str, dest_dir: Path, size: int) -> float:
    key = bytes(Account.create().key)
    async with open_host(
        key,
        ["/ip4/127.0.0.1/tcp/0"],
        "/medfed/bench/1",
        lambda a: True,
        lambda a, s: True,
        dest_dir / "store",
    ) as host:
        await host.connect([maddr])
        t0 = time.perf_counter()
        out = await host.fetch(sha, [maddr], dest_dir, max_bytes=size, timeout=60)
        elapsed = time.perf_counter() - t0
        out.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 MB and 35 MB, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--netns", action="store_true", help="direct vs relayed between network namespaces (root)"
    )
    parser.add_argument("--serve", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--relay-proc", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--private-serve", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--fetch", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # libp2p logs redial attempts to peers that already left as errors; they are noise here
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    if args.serve is not None:
        trio.run(provider, args.serve)
        return
    if args.relay_proc:
        logging.getLogger("libp2p.relay").setLevel(logging.WARNING)  # a circuit reset says why
        trio.run(relay_proc, args.relay_proc[0])
        return
    if args.private_serve:
        trio.run(private_provider, args.private_serve[0], args.private_serve[1], args.private_serve[2:])
        return
    if args.fetch:
        listen, maddr, sha, size, dest = args.fetch
        elapsed, cpu = trio.run(fetch_once, listen, maddr, sha, int(size), Path(dest))
        print(elapsed, cpu)
        return
    sizes = [8 * MB, 35 * MB] if args.quick else [35 * MB, 140 * MB]
    repeats = 1 if args.quick else args.repeats
    if args.netns:
        run_netns(sizes, repeats)
        return
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp_s:
        tmp = Path(tmp_s)
        shas = {}
        for size in sizes:
            shas[size] = make_file(tmp / f"src-{size}", size)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", *[f"{shas[s]}={tmp / f'src-{s}'}" for s in sizes]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline().split()
            assert ready and ready[0] == "READY", f"provider failed to start: {ready}"
            maddr, port = ready[1], int(ready[2])
            results = {}
            for size in sizes:
                p2p_t, tcp_t = [], []
                for i in range(repeats):
                    tcp_t.append(tcp_fetch(port, shas[size], tmp / f"tcp-{i}"))
                    (tmp / f"tcp-{i}").unlink()
                    p2p_t.append(trio.run(p2p_fetch, maddr, shas[size], tmp / f"dl-{i}", size))
                p2p_rate = size / MB / statistics.median(p2p_t)
                tcp_rate = size / MB / statistics.median(tcp_t)
                results[size] = (p2p_rate, tcp_rate)
                print(
                    f"{size // MB:>4} MB  libp2p {p2p_rate:7.1f} MB/s   plain TCP {tcp_rate:7.1f} MB/s   "
                    f"ratio {p2p_rate / tcp_rate:.3f}   (median of {repeats})",
                    flush=True,
                )
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    big = sizes[-1]
    p2p_rate, tcp_rate = results[big]
    ratio = p2p_rate / tcp_rate
    print(f"RESULT transfer_{big // MB}mb {p2p_rate:.1f} MB/s baseline={tcp_rate:.1f} ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
