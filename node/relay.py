"""`medfed-node relay`: a dedicated circuit relay for members behind firewalls (issue 19).

A federation whose members all sit behind firewalls needs one reachable relay, e.g. on a small
public host. This process joins no round: it holds a libp2p host on its own key that relays
members' connections only (the member list is read from the coordinator every
``MEMBERS_EVERY_S``), within the relay limits, and prints the address the private sites put in
their ``[p2p] relays``. It forwards Noise ciphertext between members: it cannot read or alter
what they exchange (docs/operations.md, "What a relay can and cannot see").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import trio

from chain.client import CoordinatorClient
from node.chainkind import resolve_profile
from p2p.relay import RelaySettings

log = logging.getLogger("medfed.relay")

MEMBERS_EVERY_S = 30.0


async def serve_relay(
    rpc_url: str,
    coordinator: str,
    key: bytes,
    listen: Sequence[str],
    announce: Sequence[str],
    settings: RelaySettings,
    store_dir: Path,
    ready: trio.Event | None = None,
) -> None:
    """Relay for the coordinator's members until cancelled."""
    from p2p.host import open_host

    client = CoordinatorClient(rpc_url, coordinator, None, resolve_profile(rpc_url))
    members = {a.lower() for a in await trio.to_thread.run_sync(client.members)}
    topic = f"/medfed/{client.profile.chain_id}/{coordinator.lower()}/1"
    async with open_host(
        key,
        list(listen),
        topic,
        is_member=lambda a: a.lower() in members,
        may_serve=lambda a, s: False,
        store_dir=store_dir,
        relay=settings,
    ) as host:
        addrs = [
            a if "/p2p/" in a else f"{a.rstrip('/')}/p2p/{host.peer_id}" for a in (announce or [])
        ] or host.listen_multiaddrs()
        log.info("relaying for %d members of %s", len(members), coordinator)
        for a in addrs:
            print(f"relay address (for the private sites' [p2p] relays): {a}", flush=True)
        if ready is not None:
            ready.set()
        while True:
            await trio.sleep(MEMBERS_EVERY_S)
            try:
                fresh = {a.lower() for a in await trio.to_thread.run_sync(client.members)}
            except Exception as exc:  # keep the last list; the chain may be back next time
                log.warning("could not read the member list: %r", exc)
                continue
            if fresh != members:
                log.info("member list changed: %d members", len(fresh))
                members.clear()
                members.update(fresh)
