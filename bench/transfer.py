"""Adapter transfer throughput over libp2p (TCP + Noise + Yamux) vs a plain TCP socket copy.

    python bench/transfer.py [--quick] [--repeats N]

A provider process serves random files of 35 MB and 140 MB (fp32 rank-16 adapters of a
~1.7B model are ~70 MB) both over `/medfed/adapter/1.0.0` and over a bare TCP socket on
127.0.0.1; this process downloads each, writing to disk and hashing in both cases, so the
ratio isolates the libp2p stack (Noise encryption, Yamux framing, pure-Python I/O).
Ends with `RESULT transfer_140mb <MB/s> MB/s baseline=<tcp MB/s> ratio=<libp2p/tcp>`.
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
    parser.add_argument("--serve", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # libp2p logs redial attempts to peers that already left as errors; they are noise here
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    if args.serve is not None:
        trio.run(provider, args.serve)
        return
    sizes = [8 * MB, 35 * MB] if args.quick else [35 * MB, 140 * MB]
    repeats = 1 if args.quick else args.repeats
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
