"""The node's local memory: a SQLite file in the state dir.

What it records is what a restarted node needs to resume without repeating a side effect:
the update it trained per round (so it does not retrain), whether that update was committed
(and the chain is asked too), each vote and aggregate it sent, the adapters it holds, the
metrics it reported, and the last chain block whose events it processed. Every write is its
own transaction, so a kill at any point leaves a consistent file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from node.errors import StateError

SCHEMA_VERSION = 1
MAX_STORED_INT = 2**62  # below SQLite's signed 64-bit INTEGER limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, round INTEGER NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, num_samples INTEGER NOT NULL,
    train_seconds REAL NOT NULL, committed INTEGER NOT NULL DEFAULT 0, tx TEXT);
CREATE TABLE IF NOT EXISTS aggregates (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, sha256 TEXT NOT NULL, included TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0, tx TEXT, invalid TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (round, attempt));
CREATE TABLE IF NOT EXISTS votes (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, approve INTEGER NOT NULL, reason TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0, tx TEXT, PRIMARY KEY (round, attempt));
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER PRIMARY KEY, global_sha256 TEXT NOT NULL, accuracy REAL NOT NULL, n INTEGER NOT NULL,
    eval_set_hash TEXT NOT NULL, reported INTEGER NOT NULL DEFAULT 0, tx TEXT);
CREATE TABLE IF NOT EXISTS commits (
    round INTEGER NOT NULL, member TEXT NOT NULL, sha256 TEXT NOT NULL, cid TEXT NOT NULL,
    num_samples INTEGER NOT NULL, PRIMARY KEY (round, member));
CREATE TABLE IF NOT EXISTS servers (
    round INTEGER NOT NULL, member TEXT NOT NULL, PRIMARY KEY (round, member));
CREATE TABLE IF NOT EXISTS submissions (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, aggregator TEXT NOT NULL, sha256 TEXT NOT NULL,
    cid TEXT NOT NULL, included TEXT NOT NULL, invalid TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (round, attempt));
CREATE TABLE IF NOT EXISTS outcomes (
    round INTEGER PRIMARY KEY, status TEXT NOT NULL, attempt INTEGER NOT NULL, sha256 TEXT NOT NULL,
    cid TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (member TEXT PRIMARY KEY, peer_id TEXT NOT NULL, multiaddrs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS timings (
    round INTEGER NOT NULL, what TEXT NOT NULL, seconds REAL NOT NULL);
"""


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (as root, permission bits say nothing; a
    read-only mount does)."""
    probe = directory / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Commit:
    """A member's on-chain commitment (from an UpdateCommitted event)."""

    round: int
    member: str
    sha256: str
    cid: str
    num_samples: int


@dataclass(frozen=True)
class Submission:
    """An aggregate submitted for one attempt (from an AggregateSubmitted event)."""

    round: int
    attempt: int
    aggregator: str
    sha256: str
    cid: str
    included: tuple[str, ...]
    invalid: tuple[str, ...] = ()  # issue 12: committers the aggregator claims invalid


@dataclass(frozen=True)
class Outcome:
    """How a round ended: status "finalized" (sha256/cid = new global) or "failed"."""

    round: int
    status: str
    attempt: int
    sha256: str
    cid: str
    reason: str


@dataclass(frozen=True)
class UpdateRecord:
    """This node's trained update for a round."""

    round: int
    sha256: str
    num_samples: int
    train_seconds: float
    committed: bool
    tx: str | None


@dataclass(frozen=True)
class VoteRecord:
    """This node's verdict for one attempt; ``sent`` once the transaction was confirmed."""

    round: int
    attempt: int
    approve: bool
    reason: str
    sent: bool


@dataclass(frozen=True)
class MetricsRecord:
    """Held-out accuracy of a round's global adapter (round 0 = the initial adapter)."""

    round: int
    global_sha256: str
    accuracy: float
    n: int
    eval_set_hash: str
    reported: bool


class StateStore:
    """SQLite-backed state, safe to call from worker threads (one connection, one lock)."""

    def __init__(self, state_dir: Path, coordinator: str, address: str) -> None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"{state_dir}: cannot create the state dir ({exc.strerror}); choose a writable state_dir"
            ) from None
        self.path = state_dir / "state.sqlite"
        self._lock = threading.Lock()
        db: sqlite3.Connection | None = None
        try:
            self._db = db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            # issue 12: the invalid claims of an aggregate (a store written before them lacks the column)
            for table in ("aggregates", "submissions"):
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if "invalid" not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN invalid TEXT NOT NULL DEFAULT ''")
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()  # hold nothing open on a store we refuse
            if not _writable(state_dir):
                raise StateError(
                    f"{state_dir}: the state dir is read-only ({exc}); make it writable for this user "
                    "(permissions, a read-only mount, a full disk) — the node records its progress there"
                ) from None
            raise StateError(
                f"{self.path}: not a medfed state store ({exc}); move it away or fix state_dir"
            ) from None
        self._bind("coordinator", coordinator.lower())
        self._bind("address", address.lower())
        self._bind("schema", str(SCHEMA_VERSION))

    def _bind(self, key: str, value: str) -> None:
        have = self.get_meta(key)
        if have is None:
            self.set_meta(key, value)
        elif have != value:
            raise StateError(
                f"{self.path}: belongs to {key} {have}, not {value}; use another state_dir for this "
                "federation or wallet"
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A stored metadata value."""
        rows = self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a metadata value."""
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def last_block(self) -> int:
        """Last chain block whose events were processed (-1 = none)."""
        v = self.get_meta("last_block")
        return int(v) if v is not None else -1

    def set_last_block(self, block: int) -> None:
        """Advance the processed-block cursor (never backwards)."""
        if block > self.last_block:
            self.set_meta("last_block", str(block))

    # artifacts ----------------------------------------------------------------------------------
    def add_artifact(self, sha256: str, path: Path, kind: str, round: int) -> None:
        """Remember a verified adapter file held locally."""
        self._exec(
            "INSERT OR REPLACE INTO artifacts (sha256, path, kind, round, size, created) "
            "VALUES (?,?,?,?,?,?)",
            (sha256, str(path), kind, round, path.stat().st_size, time.time()),
        )

    def artifact(self, sha256: str) -> Path | None:
        """Local path of an adapter we hold, if it is still on disk."""
        rows = self._exec("SELECT path FROM artifacts WHERE sha256 = ?", (sha256,))
        if not rows:
            return None
        p = Path(str(rows[0][0]))
        return p if p.is_file() else None

    def artifacts(self) -> list[tuple[str, Path, str, int]]:
        """Every held adapter: (sha256, path, kind, round)."""
        rows = self._exec("SELECT sha256, path, kind, round FROM artifacts ORDER BY round, sha256")
        return [(str(s), Path(str(p)), str(k), int(r)) for s, p, k, r in rows]  # type: ignore[call-overload]

    # own updates --------------------------------------------------------------------------------
    def record_update(self, round: int, sha256: str, num_samples: int, train_seconds: float) -> None:
        """Remember the update trained for a round (before committing it)."""
        self._exec(
            "INSERT OR REPLACE INTO updates (round, sha256, num_samples, train_seconds, committed) "
            "VALUES (?,?,?,?,0)",
            (round, sha256, num_samples, train_seconds),
        )

    def update(self, round: int) -> UpdateRecord | None:
        """This node's update for a round, if it trained one."""
        rows = self._exec(
            "SELECT round, sha256, num_samples, train_seconds, committed, tx FROM updates WHERE round = ?",
            (round,),
        )
        if not rows:
            return None
        r, s, n, t, c, tx = rows[0]
        return UpdateRecord(int(r), str(s), int(n), float(t), bool(c), None if tx is None else str(tx))  # type: ignore[call-overload, arg-type]

    def mark_committed(self, round: int, tx: str | None) -> None:
        """The update for this round is on-chain."""
        self._exec("UPDATE updates SET committed = 1, tx = ? WHERE round = ?", (tx, round))

    # aggregates ---------------------------------------------------------------------------------
    def record_aggregate(
        self, round: int, attempt: int, sha256: str, included: list[str], invalid: list[str] | None = None
    ) -> None:
        """Remember an aggregate computed as the elected aggregator (before submitting), with the
        committers whose updates it found invalid."""
        self._exec(
            "INSERT OR REPLACE INTO aggregates (round, attempt, sha256, included, submitted, invalid) "
            "VALUES (?,?,?,?,0,?)",
            (round, attempt, sha256, ",".join(included), ",".join(invalid or [])),
        )

    def aggregate_invalid(self, round: int, attempt: int) -> list[str]:
        """The committers our aggregate for an attempt names invalid (empty if none, or no aggregate)."""
        rows = self._exec("SELECT invalid FROM aggregates WHERE round = ? AND attempt = ?", (round, attempt))
        return [a for a in str(rows[0][0]).split(",") if a] if rows else []

    def aggregate(self, round: int, attempt: int) -> tuple[str, list[str], bool] | None:
        """(sha256, included, submitted) of our aggregate for an attempt."""
        rows = self._exec(
            "SELECT sha256, included, submitted FROM aggregates WHERE round = ? AND attempt = ?",
            (round, attempt),
        )
        if not rows:
            return None
        s, inc, sub = rows[0]
        return str(s), [a for a in str(inc).split(",") if a], bool(sub)

    def mark_aggregate_submitted(self, round: int, attempt: int, tx: str | None) -> None:
        """Our aggregate for this attempt is on-chain."""
        self._exec(
            "UPDATE aggregates SET submitted = 1, tx = ? WHERE round = ? AND attempt = ?",
            (tx, round, attempt),
        )

    # votes --------------------------------------------------------------------------------------
    def record_vote(self, round: int, attempt: int, approve: bool, reason: str) -> None:
        """Remember a verdict before sending it (a restarted node re-sends the same verdict)."""
        self._exec(
            "INSERT OR IGNORE INTO votes (round, attempt, approve, reason, sent) VALUES (?,?,?,?,0)",
            (round, attempt, int(approve), reason),
        )

    def vote(self, round: int, attempt: int) -> VoteRecord | None:
        """Our verdict for an attempt, if we reached one."""
        rows = self._exec(
            "SELECT round, attempt, approve, reason, sent FROM votes WHERE round = ? AND attempt = ?",
            (round, attempt),
        )
        if not rows:
            return None
        r, a, ap, why, sent = rows[0]
        return VoteRecord(int(r), int(a), bool(ap), str(why), bool(sent))  # type: ignore[call-overload]

    def mark_vote_sent(self, round: int, attempt: int, tx: str | None) -> None:
        """The vote is on-chain."""
        self._exec("UPDATE votes SET sent = 1, tx = ? WHERE round = ? AND attempt = ?", (tx, round, attempt))

    # metrics ------------------------------------------------------------------------------------
    def record_metrics(
        self, round: int, global_sha256: str, accuracy: float, n: int, eval_set_hash: str
    ) -> None:
        """Remember an evaluation of a round's global adapter."""
        self._exec(
            "INSERT OR REPLACE INTO metrics (round, global_sha256, accuracy, n, eval_set_hash, reported) "
            "VALUES (?,?,?,?,?,0)",
            (round, global_sha256, accuracy, n, eval_set_hash),
        )

    def metrics(self, round: int) -> MetricsRecord | None:
        """The evaluation of a round's global adapter, if done."""
        rows = self._exec(
            "SELECT round, global_sha256, accuracy, n, eval_set_hash, reported FROM metrics WHERE round = ?",
            (round,),
        )
        if not rows:
            return None
        r, s, acc, n, h, rep = rows[0]
        return MetricsRecord(int(r), str(s), float(acc), int(n), str(h), bool(rep))  # type: ignore[call-overload, arg-type]

    def all_metrics(self) -> list[MetricsRecord]:
        """Every evaluation, by round."""
        rows = self._exec("SELECT round FROM metrics ORDER BY round")
        return [m for (r,) in rows if (m := self.metrics(int(r))) is not None]  # type: ignore[call-overload]

    def mark_metrics_reported(self, round: int, tx: str | None) -> None:
        """The round's metrics are on-chain."""
        self._exec("UPDATE metrics SET reported = 1, tx = ? WHERE round = ?", (tx, round))

    # what the chain said (from events; the cursor is last_block) ------------------------------
    def add_commit(self, c: Commit) -> None:
        """Remember an UpdateCommitted event."""
        self._exec(
            "INSERT OR REPLACE INTO commits (round, member, sha256, cid, num_samples) VALUES (?,?,?,?,?)",
            # a uint256 from a member; past SQLite's 64 bits it only needs to stay "huge" (the
            # aggregation caps sample weights at a multiple of the round's median anyway)
            (c.round, c.member.lower(), c.sha256, c.cid, min(int(c.num_samples), MAX_STORED_INT)),
        )

    def commits(self, round: int) -> list[Commit]:
        """Every commitment of a round, in ascending member address order."""
        rows = self._exec(
            "SELECT round, member, sha256, cid, num_samples FROM commits WHERE round = ? ORDER BY member",
            (round,),
        )
        return [Commit(int(r), str(m), str(s), str(c), int(n)) for r, m, s, c, n in rows]  # type: ignore[call-overload]

    def add_server(self, round: int, member: str) -> None:
        """Remember a ServingOnly event (issue 20: a committer without an update)."""
        self._exec("INSERT OR IGNORE INTO servers (round, member) VALUES (?,?)", (round, member.lower()))

    def servers(self, round: int) -> list[str]:
        """The round's serving-only committers, in ascending address order."""
        rows = self._exec("SELECT member FROM servers WHERE round = ? ORDER BY member", (round,))
        return [str(m) for (m,) in rows]

    def serving(self, round: int) -> bool:
        """Whether we serve ``round`` (our serveRound is on-chain, as far as we recorded)."""
        mine = "member = (SELECT value FROM meta WHERE key = 'address')"  # the store's bound address
        return bool(self._exec(f"SELECT 1 FROM servers WHERE round = ? AND {mine}", (round,)))

    def add_submission(self, s: Submission) -> None:
        """Remember an AggregateSubmitted event."""
        self._exec(
            "INSERT OR REPLACE INTO submissions (round, attempt, aggregator, sha256, cid, included, invalid) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                s.round,
                s.attempt,
                s.aggregator.lower(),
                s.sha256,
                s.cid,
                ",".join(a.lower() for a in s.included),
                ",".join(a.lower() for a in s.invalid),
            ),
        )

    def submission(self, round: int, attempt: int) -> Submission | None:
        """The aggregate submitted for an attempt, if any."""
        rows = self._exec(
            "SELECT round, attempt, aggregator, sha256, cid, included, invalid FROM submissions "
            "WHERE round = ? AND attempt = ?",
            (round, attempt),
        )
        if not rows:
            return None
        r, a, agg, sha, cid, inc, inv = rows[0]
        included = tuple(x for x in str(inc).split(",") if x)
        invalid = tuple(x for x in str(inv).split(",") if x)
        return Submission(int(r), int(a), str(agg), str(sha), str(cid), included, invalid)  # type: ignore[call-overload]

    def set_outcome(self, o: Outcome) -> None:
        """Remember how a round ended."""
        self._exec(
            "INSERT OR REPLACE INTO outcomes (round, status, attempt, sha256, cid, reason) "
            "VALUES (?,?,?,?,?,?)",
            (o.round, o.status, o.attempt, o.sha256, o.cid, o.reason),
        )

    def outcome(self, round: int) -> Outcome | None:
        """How a round ended, if it has."""
        rows = self._exec(
            "SELECT round, status, attempt, sha256, cid, reason FROM outcomes WHERE round = ?", (round,)
        )
        if not rows:
            return None
        r, st, a, sha, cid, why = rows[0]
        return Outcome(int(r), str(st), int(a), str(sha), str(cid), str(why))  # type: ignore[call-overload]

    def set_peer(self, member: str, peer_id: str, multiaddrs: tuple[str, ...]) -> None:
        """Remember what a member published."""
        self._exec(
            "INSERT OR REPLACE INTO peers (member, peer_id, multiaddrs) VALUES (?,?,?)",
            (member.lower(), peer_id, ",".join(multiaddrs)),
        )

    def peers(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """{member: (peer id, multiaddrs)} as published on-chain."""
        rows = self._exec("SELECT member, peer_id, multiaddrs FROM peers")
        return {str(m): (str(p), tuple(a for a in str(ad).split(",") if a)) for m, p, ad in rows}

    # timings (for bench/round.py and the logs) --------------------------------------------------
    def add_timing(self, round: int, what: str, seconds: float) -> None:
        """Record how long one step of a round took."""
        self._exec("INSERT INTO timings (round, what, seconds) VALUES (?,?,?)", (round, what, seconds))

    def timings(self, round: int) -> dict[str, float]:
        """Summed seconds per step for a round."""
        rows = self._exec("SELECT what, SUM(seconds) FROM timings WHERE round = ? GROUP BY what", (round,))
        return {str(w): float(s) for w, s in rows}  # type: ignore[arg-type]
