"""A provider host in its own process (so a test can SIGKILL it mid-transfer).

Usage: python tests/p2p/p2p_provider_proc.py <key hex> <sha256 hex> <file> <store dir>
Prints 'READY <multiaddr>' and serves until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from p2p.host import open_host


async def main(key_hex: str, sha: str, path: str, store: str) -> None:
    async with open_host(
        bytes.fromhex(key_hex),
        ["/ip4/127.0.0.1/tcp/0"],
        "/medfed/test/1",
        lambda a: True,
        lambda a, s: True,
        Path(store),
    ) as host:
        host.serve(sha, Path(path))
        print("READY", host.listen_multiaddrs()[0], flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:5])
