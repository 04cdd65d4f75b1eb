"""A libp2p host process for tests/e2e/test_netns.py (run inside a network namespace).

    python netns_peer.py relay LISTEN
    python netns_peer.py private LISTEN RELAY [TARGET]

`relay` serves circuit relay v2; `private` reserves on RELAY, prints `READY <its circuit address>`
and, given TARGET (another private host's circuit address), dials it through the relay and
prints `RELAYED`, then `DIRECT` once hole punching (DCUtR) joined a direct connection, and
`FETCHED <n>` after downloading the peer's served file. Everyone is a member here."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import trio
from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from libp2p.peer.id import ID

from p2p.host import open_host
from p2p.relay import RelaySettings, is_relayed_conn

BLOB = b"medfed" * 200_000


async def main(role: str, listen: str, relay: str = "", target: str = "") -> None:
    store = Path(tempfile.mkdtemp(prefix="netns-peer-"))
    settings = RelaySettings(serve=True) if role == "relay" else RelaySettings(private=True, relays=(relay,))
    key = bytes(Account.create().key)
    async with open_host(
        key, [listen], "/medfed/t/1", lambda a: True, lambda a, s: True, store, relay=settings
    ) as h:
        (store / "blob").write_bytes(BLOB)
        h.serve(hashlib.sha256(BLOB).hexdigest(), store / "blob")
        if role == "relay":
            print("READY", h.listen_multiaddrs()[0], flush=True)
            await trio.sleep_forever()
        while not h.advertised_multiaddrs():
            await trio.sleep(0.1)
        print("READY", h.advertised_multiaddrs()[0], flush=True)
        if not target:
            await trio.sleep_forever()
        pid = ID.from_base58(target.rsplit("/p2p/", 1)[1])
        await h.connect([target])
        conns = h.host.get_network().get_connections(pid)
        if conns and all(is_relayed_conn(c) for c in conns):
            print("RELAYED", flush=True)
        with trio.move_on_after(40):
            while not any(not is_relayed_conn(c) for c in h.host.get_network().get_connections(pid)):
                await trio.sleep(0.2)
            print("DIRECT", flush=True)
        got = await h.fetch(hashlib.sha256(BLOB).hexdigest(), [pid.to_base58()], store / "got", timeout=30)
        print("FETCHED", got.stat().st_size, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(main, *sys.argv[1:])
