"""Incremental indexer: coordinator events -> SQLite, resuming after the last stored block.

Each `sync_once()` reads the blocks after `meta.last_block` up to the chain head in
pages (chain.events.EventReader), stores every event, the timestamps of the blocks
that hold them, and the new `last_block` in ONE transaction per page, then
refreshes a snapshot of view calls (token supply, global adapter, parameters).
A restarted explorer therefore continues where it stopped instead of rescanning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from typing import Any

from eth_utils import to_checksum_address

from chain import peer_record
from chain.artifacts import load_artifact
from chain.client import CoordinatorClient
from chain.events import EventReader
from chain.rpc import MS_THRESHOLD
from chain.types import ChainEvent
from node.chainkind import AUTO, resolve_profile
from node.explorer.db import Database
from node.explorer.store import Fact, apply_fact

log = logging.getLogger("medfed.explorer")


def block_time_ms(timestamp: int) -> int:
    """A block timestamp in Unix milliseconds, whatever unit the block uses.

    Decided per block, not per chain: Cypherium's genesis block is in seconds while the
    blocks it produces are in milliseconds (chain.rpc.MS_THRESHOLD is the same test).
    """
    return int(timestamp) if int(timestamp) > MS_THRESHOLD else int(timestamp) * 1000


def _norm(value: Any) -> Any:
    """Explorer conventions: addresses lower-case, bytes as bare lower-case hex, tuples as lists."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, tuple | list):
        return [_norm(v) for v in value]
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        try:
            int(value, 16)
        except ValueError:
            return value
        return value.lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= 2**63:
        return str(value)  # JSON and SQLite integers stop at 64 bits; token amounts do not
    return value


def to_fact(event: ChainEvent) -> Fact:
    """The storable form of a chain.types event."""
    args = {
        f.name: _norm(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in ("block_number", "log_index", "tx_hash")
    }
    if event.name == "PeerPublished":  # stored as published (addresses + name=), decoded when read
        args["multiaddrs"] = peer_record.encode(args["multiaddrs"], args.pop("display_name", ""))
    return Fact(
        name=event.name, block=event.block_number, log_index=event.log_index, tx=event.tx_hash, args=args
    )


def _store_event(conn: sqlite3.Connection, e: ChainEvent) -> None:
    """Store one event; one the index cannot hold (adversarial content nobody foresaw) is skipped
    with a warning naming it, never the page: the indexer moves past it."""
    conn.execute("SAVEPOINT event")
    try:
        apply_fact(conn, to_fact(e))
    except (ValueError, TypeError, KeyError, OverflowError, sqlite3.IntegrityError) as exc:
        conn.execute("ROLLBACK TO event")
        log.warning(
            "explorer: skipping %s in block %d, tx %s: %s: %s",
            e.name,
            e.block_number,
            e.tx_hash,
            type(exc).__name__,
            exc,
        )
    conn.execute("RELEASE event")


def find_deploy_block(client: CoordinatorClient, head: int) -> int:
    """The first block at which the coordinator has code (`CoordinatorClient.first_code_block`).

    Needs historical state (anvil has it; a pruned node may not): without it, 0.
    """
    block = client.first_code_block(head)
    if block is None:  # no archive state: scan from genesis instead
        log.info("explorer: indexing from block 0")
        return 0
    return block


class Indexer:
    """Keeps a `Database` in step with one coordinator's events."""

    def __init__(self, client: CoordinatorClient, db: Database, from_block: int | None = None) -> None:
        self.client = client
        self.db = db
        self.reader = EventReader(client)
        self._from_block = from_block
        self._token_abi = load_artifact("RewardToken").abi
        self.pages_indexed = 0

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        coordinator: str,
        db: Database,
        profile: str = AUTO,
        from_block: int | None = None,
    ) -> Indexer:
        """Connect (checking chain id and contract code) and bind the database to this chain + coordinator.

        `profile` "auto" picks it from the node's client version; the time unit always comes from
        the chain's latest block (node.chainkind), so deadlines show right whatever was passed.
        """
        prof = resolve_profile(rpc_url, profile)
        client = CoordinatorClient(rpc_url, coordinator, None, prof)
        db.bind_identity(prof.chain_id, client.address)
        db.set_meta("time_unit_ms", json.dumps(bool(client.time_unit_ms)))
        return cls(client, db, from_block)

    def next_block(self, head: int) -> int:
        """The first block not yet indexed (on a fresh database: --from-block or the deployment block)."""
        last = self.db.last_block()
        if last is not None:
            return last + 1
        if self._from_block is not None:
            return self._from_block
        start = find_deploy_block(self.client, head)
        log.info("explorer: fresh index, starting at block %d (coordinator deployment)", start)
        return start

    def sync_once(self) -> int:
        """Index every block up to the current head; return the number of events stored."""
        head = self.client.block_number()
        self.db.set_meta("head_block", json.dumps(head))
        start = self.next_block(head)
        stored = 0
        if start <= head:
            for last, events in self.reader.pages(start, head):
                stored += self._store_page(last, events)
            if stored:
                log.info("explorer: indexed %d event(s) up to block %d", stored, head)
        elif self.db.last_block() is None:
            self.db.set_meta("last_block", str(start - 1))
        self._snapshot()
        self.db.set_meta("synced_at_ms", json.dumps(int(time.time() * 1000)))
        return stored

    def _store_page(self, last: int, events: list[ChainEvent]) -> int:
        times = {}
        # the page's last block too, so the page can say how old the indexed head is
        for b in sorted({e.block_number for e in events} | {last}):
            times[b] = block_time_ms(int(self.client.w3.eth.get_block(b)["timestamp"]))
        with self.db.transaction() as conn:
            for b, ms in times.items():
                conn.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (b, ms))
            for e in events:
                _store_event(conn, e)
            self.db.set_meta("last_block", str(last), conn)
        self.pages_indexed += 1
        return len(events)

    def _snapshot(self) -> None:
        """View calls shown on the overview (cheap; refreshed after every sync)."""
        c = self.client
        token_addr = c.token_address()
        token = c.w3.eth.contract(address=token_addr, abi=self._token_abi)  # type: ignore[call-overload]
        adapter = c.global_adapter()
        params = c.params()
        live = c.round_info()
        deployed = self.db.one("SELECT args FROM events WHERE name = 'Deployed' LIMIT 1")
        initial = None
        if deployed is not None:
            d = json.loads(deployed["args"])
            initial = {"sha256": d["initial_sha256"], "cid": d["initial_cid"]}
        snap = {
            "token": token_addr.lower(),
            "token_symbol": str(token.functions.symbol().call()),
            "token_decimals": int(token.functions.decimals().call()),
            "total_supply": str(int(token.functions.totalSupply().call())),
            "global_adapter": {"sha256": adapter.sha256.hex(), "cid": adapter.cid, "round": adapter.round},
            "initial_adapter": initial,
            "base_model": c.base_model(),
            "lora_config_hash": c.lora_config_hash().hex(),
            "current_round": c.current_round(),
            "live_round": {
                "round": live.round,
                "phase": live.phase.name.lower(),
                "attempt": live.attempt,
                "aggregator": live.aggregator,
                "approvals": live.approvals,
                "rejections": live.rejections,
            },
            "deployer": to_checksum_address(c.deployer()),
            "successor": c.successor(),
            "params": {
                k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 2**53 else v)
                for k, v in dataclasses.asdict(params).items()
            },
        }
        self.db.set_meta("snapshot", json.dumps(snap))
