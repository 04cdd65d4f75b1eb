"""Apply one coordinator event to the SQLite tables.

`Fact` is the explorer's own normalised view of a chain event (snake_case field
names, addresses lower-case, hashes as 64 lower-case hex characters), so the
tables do not depend on how chain/ spells its dataclasses.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fact:
    """One contract event, normalised for storage."""

    name: str
    block: int
    log_index: int
    tx: str
    args: dict[str, Any] = field(default_factory=dict)


def apply_fact(conn: sqlite3.Connection, f: Fact) -> None:
    """Write `f` into the `events` table and the table(s) its kind updates (idempotent)."""
    a = f.args
    rnd = a.get("round")
    addr = a.get("member") or a.get("aggregator") or a.get("voter") or a.get("to")
    conn.execute(
        "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (f.block, f.log_index, f.tx, f.name, rnd, addr, json.dumps(a, sort_keys=True)),
    )
    handler = _HANDLERS.get(f.name)
    if handler is not None:
        handler(conn, f, a)


def _member_added(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO members (address, added_block, added_tx) VALUES (?, ?, ?) "
        "ON CONFLICT(address) DO UPDATE SET added_block = excluded.added_block, "
        "added_tx = excluded.added_tx, removed_block = NULL",
        (a["member"], f.block, f.tx),
    )


def _member_removed(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO members (address, removed_block) VALUES (?, ?) "
        "ON CONFLICT(address) DO UPDATE SET removed_block = excluded.removed_block",
        (a["member"], f.block),
    )


def _peer_published(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO members (address, peer_id, multiaddrs, peer_block) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(address) DO UPDATE SET peer_id = excluded.peer_id, "
        "multiaddrs = excluded.multiaddrs, peer_block = excluded.peer_block",
        (a["member"], a["peer_id"], a["multiaddrs"], f.block),
    )


def _round_opened(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO rounds (round, base_sha256, base_cid, commit_deadline, opened_block, opened_tx) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(round) DO UPDATE SET base_sha256 = excluded.base_sha256, "
        "base_cid = excluded.base_cid, commit_deadline = excluded.commit_deadline, "
        "opened_block = excluded.opened_block, opened_tx = excluded.opened_tx",
        (a["round"], a["base_sha256"], a["base_cid"], a["commit_deadline"], f.block, f.tx),
    )


def _update_committed(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (a["round"], a["member"], a["sha256"], a["cid"], a["num_samples"], f.block, f.log_index, f.tx),
    )


def _ensure_attempt(conn: sqlite3.Connection, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO attempts (round, attempt, aggregator) VALUES (?, ?, ?)",
        (a["round"], a["attempt"], a.get("aggregator", "")),
    )


def _aggregator_elected(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    _ensure_attempt(conn, a)
    conn.execute(
        "UPDATE attempts SET aggregator = ?, aggregate_deadline = ?, elected_block = ?, elected_tx = ? "
        "WHERE round = ? AND attempt = ?",
        (a["aggregator"], a["aggregate_deadline"], f.block, f.tx, a["round"], a["attempt"]),
    )


def _aggregate_submitted(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    _ensure_attempt(conn, a)
    conn.execute(
        "UPDATE attempts SET aggregator = ?, sha256 = ?, cid = ?, included = ?, verify_deadline = ?, "
        "submit_block = ?, submit_tx = ? WHERE round = ? AND attempt = ?",
        (
            a["aggregator"],
            a["sha256"],
            a["cid"],
            json.dumps(a["included"]),
            a["verify_deadline"],
            f.block,
            f.tx,
            a["round"],
            a["attempt"],
        ),
    )


def _vote_cast(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?)",
        (a["round"], a["attempt"], a["voter"], int(bool(a["approve"])), f.block, f.log_index, f.tx),
    )


def _attempt_failed(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    _ensure_attempt(conn, a)
    conn.execute(
        "UPDATE attempts SET outcome = ?, outcome_block = ?, outcome_tx = ? WHERE round = ? AND attempt = ?",
        (a["reason"], f.block, f.tx, a["round"], a["attempt"]),
    )


def _round_finalized(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    _ensure_attempt(conn, a)
    conn.execute(
        "UPDATE attempts SET outcome = 'accepted', outcome_block = ?, outcome_tx = ? "
        "WHERE round = ? AND attempt = ?",
        (f.block, f.tx, a["round"], a["attempt"]),
    )
    conn.execute(
        "UPDATE rounds SET status = 'finalized', final_attempt = ?, global_sha256 = ?, global_cid = ?, "
        "attempts = ?, closed_block = ?, closed_tx = ? WHERE round = ?",
        (a["attempt"], a["global_sha256"], a["global_cid"], a["attempt"] + 1, f.block, f.tx, a["round"]),
    )


def _round_failed(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE rounds SET status = 'failed', reason = ?, attempts = ?, closed_block = ?, closed_tx = ? "
        "WHERE round = ?",
        (a["reason"], a["attempts"], f.block, f.tx, a["round"]),
    )


def _reward_paid(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO rewards VALUES (?, ?, ?, ?, ?, ?, ?)",
        (a["round"], a["to"], str(a["amount"]), a["role"], f.block, f.log_index, f.tx),
    )


def _metrics_reported(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a["round"],
            a["member"],
            a["eval_set_hash"],
            a["accuracy_ppm"],
            a["n"],
            f.block,
            f.log_index,
            f.tx,
        ),
    )


# ----- governance (issue 21)


def _proposal_created(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO proposals (id, proposer, kind, param, target, value, deadline, created_block, "
        "created_tx) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "proposer = excluded.proposer, kind = excluded.kind, param = excluded.param, "
        "target = excluded.target, value = excluded.value, deadline = excluded.deadline, "
        "created_block = excluded.created_block, created_tx = excluded.created_tx",
        (
            a["id"],
            a["proposer"],
            a["kind"],
            a["param"],
            a["target"],
            str(a["value"]),
            a["deadline"],
            f.block,
            f.tx,
        ),
    )


def _proposal_voted(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO proposal_votes VALUES (?, ?, ?, ?, ?, ?)",
        (a["id"], a["voter"], int(bool(a["support"])), f.block, f.log_index, f.tx),
    )
    conn.execute(
        "UPDATE proposals SET yes = ?, no = ?, required = ? WHERE id = ?",
        (a["yes"], a["no"], a["required"], a["id"]),
    )


def _proposal_outcome(status: str) -> Any:
    def handler(conn: sqlite3.Connection, f: Fact, a: dict[str, Any]) -> None:
        outcome = "queued" if status == "passed" and a.get("queued") else status
        conn.execute(
            "UPDATE proposals SET status = ?, reason = coalesce(?, reason), decided_block = ?, "
            "decided_tx = ? WHERE id = ?",
            (outcome, a.get("reason"), f.block, f.tx, a["id"]),
        )

    return handler


_HANDLERS = {
    "MemberAdded": _member_added,
    "MemberRemoved": _member_removed,
    "PeerPublished": _peer_published,
    "RoundOpened": _round_opened,
    "UpdateCommitted": _update_committed,
    "AggregatorElected": _aggregator_elected,
    "AggregateSubmitted": _aggregate_submitted,
    "VoteCast": _vote_cast,
    "AttemptFailed": _attempt_failed,
    "RoundFinalized": _round_finalized,
    "RoundFailed": _round_failed,
    "RewardPaid": _reward_paid,
    "MetricsReported": _metrics_reported,
    "ProposalCreated": _proposal_created,
    "ProposalVoted": _proposal_voted,
    "ProposalPassed": _proposal_outcome("passed"),
    "ProposalRejected": _proposal_outcome("rejected"),
    "ProposalExecuted": _proposal_outcome("executed"),
    "ProposalVoid": _proposal_outcome("void"),
}
