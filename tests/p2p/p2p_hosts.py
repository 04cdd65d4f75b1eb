"""Helpers for p2p tests (imported by name, not a conftest): real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
from eth_account import Account

from p2p.host import MedfedHost, open_host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def new_key() -> bytes:
    return bytes(Account.create().key)


def address_of(key: bytes) -> str:
    return Account.from_key(key).address


def write_random(path: Path, size: int) -> str:
    """Write `size` random bytes (in 4 MiB pieces); return their sha256 hex."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


@asynccontextmanager
async def running_hosts(
    keys: list[bytes],
    tmp: Path,
    topic: str = "/medfed/test/1",
    is_member: Callable[[str], bool] | list[Callable[[str], bool]] = lambda a: True,
    may_serve: Callable[[str, str], bool] = lambda a, s: True,
    **kwargs: object,
) -> AsyncIterator[list[MedfedHost]]:
    """Open one host per key (each with its own store under tmp)."""
    members = is_member if isinstance(is_member, list) else [is_member] * len(keys)
    async with AsyncExitStack() as stack:
        hosts = []
        for i, key in enumerate(keys):
            h = await stack.enter_async_context(
                open_host(key, LOOPBACK, topic, members[i], may_serve, tmp / f"store{i}", **kwargs)  # type: ignore[arg-type]
            )
            hosts.append(h)
        yield hosts


async def link(hosts: list[MedfedHost], line: bool = False) -> None:
    """Connect each host to its predecessor (and, unless `line`, to host 0); wait for the gossip mesh."""
    for i, h in enumerate(hosts[1:], start=1):
        targets = hosts[i - 1].listen_multiaddrs()
        if not line and i > 1:
            targets += hosts[0].listen_multiaddrs()
        await h.connect(targets)
    for i, h in enumerate(hosts):
        await h.wait_for_topic_peers(1 if i in (0, len(hosts) - 1) else 2, timeout=10)
    await trio.sleep(0.2)
