"""SQLite store of the indexed coordinator events.

One table per kind of fact (rounds, commits, attempts, votes, rewards, metrics,
members) plus `events` (every event, for the activity feed) and `meta`
(last indexed block, chain identity, snapshots of view calls). Every row carries
the (block, log_index) of the event that wrote it, and all writes of one batch
plus the new `last_block` commit in one transaction, so a crash never leaves a
half-indexed block and a restart resumes exactly after `last_block`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.explorer.errors import ExplorerError, IndexMismatch

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, timestamp_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    name TEXT NOT NULL, round INTEGER, address TEXT, args TEXT NOT NULL,
    PRIMARY KEY (block, log_index));
CREATE TABLE IF NOT EXISTS members (
    address TEXT PRIMARY KEY, added_block INTEGER, added_tx TEXT, removed_block INTEGER,
    peer_id TEXT, multiaddrs TEXT, peer_block INTEGER);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, base_sha256 TEXT, base_cid TEXT, commit_deadline INTEGER,
    opened_block INTEGER, opened_tx TEXT, status TEXT NOT NULL DEFAULT 'open',
    final_attempt INTEGER, global_sha256 TEXT, global_cid TEXT, reason TEXT,
    attempts INTEGER, closed_block INTEGER, closed_tx TEXT);
CREATE TABLE IF NOT EXISTS commits (
    round INTEGER NOT NULL, member TEXT NOT NULL, sha256 TEXT NOT NULL, cid TEXT NOT NULL,
    num_samples INTEGER NOT NULL, block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    PRIMARY KEY (round, member));
CREATE INDEX IF NOT EXISTS commits_sha ON commits (sha256);
CREATE TABLE IF NOT EXISTS attempts (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, aggregator TEXT NOT NULL,
    aggregate_deadline INTEGER, elected_block INTEGER, elected_tx TEXT,
    sha256 TEXT, cid TEXT, included TEXT, verify_deadline INTEGER, submit_block INTEGER, submit_tx TEXT,
    outcome TEXT NOT NULL DEFAULT 'pending', outcome_block INTEGER, outcome_tx TEXT,
    PRIMARY KEY (round, attempt));
CREATE INDEX IF NOT EXISTS attempts_sha ON attempts (sha256);
CREATE TABLE IF NOT EXISTS votes (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, voter TEXT NOT NULL, approve INTEGER NOT NULL,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    PRIMARY KEY (round, attempt, voter));
CREATE TABLE IF NOT EXISTS rewards (
    round INTEGER NOT NULL, recipient TEXT NOT NULL, amount TEXT NOT NULL, role TEXT NOT NULL,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    PRIMARY KEY (block, log_index));
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL, member TEXT NOT NULL, eval_set_hash TEXT NOT NULL,
    accuracy_ppm INTEGER NOT NULL, n INTEGER NOT NULL,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    PRIMARY KEY (round, member));
CREATE TABLE IF NOT EXISTS proposals (
    id INTEGER PRIMARY KEY, proposer TEXT, kind INTEGER, param INTEGER, target TEXT, value TEXT,
    deadline INTEGER, created_block INTEGER, created_tx TEXT, status TEXT NOT NULL DEFAULT 'open',
    yes INTEGER NOT NULL DEFAULT 0, no INTEGER NOT NULL DEFAULT 0, required INTEGER, reason TEXT,
    decided_block INTEGER, decided_tx TEXT);
CREATE TABLE IF NOT EXISTS proposal_votes (
    id INTEGER NOT NULL, voter TEXT NOT NULL, support INTEGER NOT NULL,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    PRIMARY KEY (id, voter));
"""


class Database:
    """A thread-safe handle on the explorer's SQLite file (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            with self._lock:
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.executescript(SCHEMA)
                if self.get_meta("schema_version") is None:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
        except (OSError, sqlite3.Error) as e:
            raise ExplorerError(
                f"{self.path}: cannot open the explorer index ({e}): pass a writable --db path"
            ) from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block of writes atomically (all or nothing)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        """Run a read query and return the first row, or None."""
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def get_meta(self, key: str) -> str | None:
        """Read one meta value."""
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def get_meta_json(self, key: str) -> Any:
        """Read one JSON meta value (None when absent)."""
        raw = self.get_meta(key)
        return None if raw is None else json.loads(raw)

    def set_meta(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        """Write one meta value (inside `conn`'s transaction when given)."""
        with self._lock:
            (conn or self._conn).execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def last_block(self) -> int | None:
        """The last block whose events are all stored, or None before the first sync."""
        raw = self.get_meta("last_block")
        return None if raw is None else int(raw)

    def bind_identity(self, chain_id: int, coordinator: str) -> None:
        """Record which chain and coordinator this file indexes; refuse a file made for another."""
        want = {"chain_id": chain_id, "coordinator": coordinator.lower()}
        have = self.get_meta_json("identity")
        if have is None:
            self.set_meta("identity", json.dumps(want))
        elif have != want:
            raise IndexMismatch(
                f"{self.path} indexes coordinator {have['coordinator']} on chain {have['chain_id']}, "
                f"not {want['coordinator']} on chain {chain_id}: pass another --db or delete the file"
            )
