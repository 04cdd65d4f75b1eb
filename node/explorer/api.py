"""JSON API over the explorer's SQLite index.

Every endpoint is a pure function of the database: `route(db, path)` returns
`(status, body)`; malformed input raises `BadRequest` (400), unknown rounds,
members or paths raise `NotFound` (404). Addresses come out EIP-55 checksummed,
hashes as 64 lower-case hex characters (what `sha256sum` prints), token amounts
as decimal strings in the token's smallest unit, times as Unix milliseconds.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from eth_utils import to_checksum_address

from chain import peer_record
from chain.types import PARAM_NAMES
from node.explorer.db import Database
from node.explorer.errors import ApiError, BadRequest, NotFound
from node.metric_report import decode_report

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SHA256 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ROUND = re.compile(r"^[0-9]{1,18}$")
_LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: str.isdigit() also accepts "²", int() does not

Json = dict[str, Any]
KINDS = {1: "add-member", 2: "remove-member", 3: "set", 4: "successor"}  # chain.types.ProposalKind


def parse_address(text: str) -> str:
    """Validate a 0x-prefixed 20-byte hex address; return it lower-case."""
    if not _ADDRESS.fullmatch(text):
        raise BadRequest(f"bad address {text[:80]!r}: expected 0x followed by 40 hex characters")
    return text.lower()


def parse_sha256(text: str) -> str:
    """Validate a sha256 in hex (64 characters, optional 0x); return it lower-case without 0x."""
    if not _SHA256.fullmatch(text):
        raise BadRequest(f"bad sha256 {text[:80]!r}: expected 64 hex characters")
    return text.lower().removeprefix("0x")


def parse_round(text: str) -> int:
    """Validate a round number (a non-negative decimal integer)."""
    if not _ROUND.fullmatch(text):
        raise BadRequest(f"bad round {text[:80]!r}: expected a round number such as 1")
    return int(text)


def _cs(addr: str | None) -> str | None:
    return None if not addr else to_checksum_address(addr)


class Api:
    """Builds the JSON answers from a `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ----- helpers -------------------------------------------------------------------------
    def _unit_ms(self) -> bool:
        return bool(self.db.get_meta_json("time_unit_ms"))

    def _deadline_ms(self, value: int | None) -> int | None:
        if value is None:
            return None
        return int(value) if self._unit_ms() else int(value) * 1000

    def _time(self, block: int | None) -> int | None:
        if block is None:
            return None
        row = self.db.one("SELECT timestamp_ms FROM blocks WHERE number = ?", (block,))
        return None if row is None else int(row["timestamp_ms"])

    def _where(self, block: int | None, tx: str | None) -> Json:
        return {"block": block, "tx": tx, "time_ms": self._time(block)}

    def _snapshot(self) -> Json:
        snap = self.db.get_meta_json("snapshot")
        return snap if isinstance(snap, dict) else {}

    def _phase(self, n: int, status: str) -> str:
        """The live round's phase (commit, aggregate, verify) from the contract; else the status."""
        live = self._snapshot().get("live_round") or {}
        if status == "open" and live.get("round") == n and live.get("phase") not in (None, "none"):
            return str(live["phase"])
        return status

    # ----- endpoints -----------------------------------------------------------------------
    def status(self) -> Json:
        """Indexing progress and the chain identity."""
        ident = self.db.get_meta_json("identity") or {}
        last = self.db.last_block()
        return {
            "chain_id": ident.get("chain_id"),
            "coordinator": _cs(ident.get("coordinator")),
            "last_block": last,
            "last_block_time_ms": self._time(last) if last is not None else None,
            "head_block": self.db.get_meta_json("head_block"),
            "time_unit_ms": self._unit_ms(),
            "synced_at_ms": self.db.get_meta_json("synced_at_ms"),
            "events": int(self.db.one("SELECT count(*) AS c FROM events")["c"]),  # type: ignore[index]
        }

    def overview(self) -> Json:
        """Federation overview: members, rounds, current global adapter, token supply."""
        snap = self._snapshot()
        rounds = self.rounds()["rounds"]
        last_final = next((r for r in rounds if r["status"] == "finalized"), None)
        global_adapter = snap.get("global_adapter") or {}
        if not global_adapter and last_final is not None:
            global_adapter = {"sha256": last_final["global_sha256"], "cid": last_final["global_cid"]}
        if global_adapter and "round" not in global_adapter:
            global_adapter = {**global_adapter, "round": last_final["round"] if last_final else 0}
        return {
            "status": self.status(),
            "federation": {
                "base_model": snap.get("base_model"),
                "lora_config_hash": snap.get("lora_config_hash"),
                "initial_adapter": snap.get("initial_adapter"),
                "params": snap.get("params"),
                "current_round": snap.get("current_round"),
            },
            "token": {
                "address": _cs(snap.get("token")),
                "symbol": snap.get("token_symbol"),
                "decimals": snap.get("token_decimals", 18),
                "total_supply": snap.get("total_supply"),
                "rewards_paid": str(self._sum_rewards("1 = ?", (1,))),
            },
            "global_adapter": global_adapter or None,
            "members": self.members()["members"],
            "rounds": rounds,
            "recent_events": self.events(limit=12)["events"],
        }

    def _sum_rewards(self, where: str, params: tuple[Any, ...]) -> int:
        rows = self.db.query(f"SELECT amount FROM rewards WHERE {where}", params)
        return sum(int(r["amount"]) for r in rows)

    def rounds(self) -> Json:
        """Every round, newest first, with its outcome and counts."""
        out = []
        for r in self.db.query("SELECT * FROM rounds ORDER BY round DESC"):
            n = r["round"]
            commits = self.db.one("SELECT count(*) AS c FROM commits WHERE round = ?", (n,))
            attempts = self.db.one("SELECT count(*) AS c FROM attempts WHERE round = ?", (n,))
            agg = None
            if r["final_attempt"] is not None:
                row = self.db.one(
                    "SELECT aggregator FROM attempts WHERE round = ? AND attempt = ?", (n, r["final_attempt"])
                )
                agg = _cs(row["aggregator"]) if row else None
            out.append(
                {
                    "round": n,
                    "status": r["status"],
                    "phase": self._phase(n, r["status"]),
                    "reason": r["reason"],
                    "commits": commits["c"] if commits else 0,
                    "attempts": attempts["c"] if attempts else 0,
                    "aggregator": agg,
                    "global_sha256": r["global_sha256"],
                    "global_cid": r["global_cid"],
                    "rewards_paid": str(self._sum_rewards("round = ?", (n,))),
                    "opened": self._where(r["opened_block"], r["opened_tx"]),
                    "closed": self._where(r["closed_block"], r["closed_tx"]),
                }
            )
        return {"rounds": out}

    def round_detail(self, n: int) -> Json:
        """Everything that happened in round `n`."""
        r = self.db.one("SELECT * FROM rounds WHERE round = ?", (n,))
        if r is None:
            raise NotFound(f"round {n} is not on-chain (yet): see /api/rounds for the known rounds")
        commits = [
            {
                "member": _cs(c["member"]),
                "sha256": c["sha256"],
                "cid": c["cid"],
                "num_samples": c["num_samples"],
                **self._where(c["block"], c["tx"]),
            }
            for c in self.db.query("SELECT * FROM commits WHERE round = ? ORDER BY block, log_index", (n,))
        ]
        attempts = []
        # issue 12: the committers each submission named invalid (read from its stored event)
        invalid: dict[int, list[str | None]] = {}
        for e in self.db.query(
            "SELECT args FROM events WHERE name = 'AggregateSubmitted' AND round = ?", (n,)
        ):
            sa = json.loads(e["args"])
            invalid[int(sa["attempt"])] = [_cs(x) for x in sa.get("invalid", [])]
        for at in self.db.query("SELECT * FROM attempts WHERE round = ? ORDER BY attempt", (n,)):
            votes = [
                {"voter": _cs(v["voter"]), "approve": bool(v["approve"]), **self._where(v["block"], v["tx"])}
                for v in self.db.query(
                    "SELECT * FROM votes WHERE round = ? AND attempt = ? ORDER BY block, log_index",
                    (n, at["attempt"]),
                )
            ]
            attempts.append(
                {
                    "attempt": at["attempt"],
                    "aggregator": _cs(at["aggregator"]),
                    "aggregate_deadline": at["aggregate_deadline"],
                    "aggregate_deadline_ms": self._deadline_ms(at["aggregate_deadline"]),
                    "elected": self._where(at["elected_block"], at["elected_tx"]),
                    "sha256": at["sha256"],
                    "cid": at["cid"],
                    "included": [_cs(x) for x in json.loads(at["included"])] if at["included"] else None,
                    "invalid": invalid.get(int(at["attempt"])) if at["included"] else None,
                    "verify_deadline": at["verify_deadline"],
                    "verify_deadline_ms": self._deadline_ms(at["verify_deadline"]),
                    "submitted": self._where(at["submit_block"], at["submit_tx"])
                    if at["submit_block"]
                    else None,
                    "outcome": at["outcome"],
                    "decided": self._where(at["outcome_block"], at["outcome_tx"])
                    if at["outcome_block"]
                    else None,
                    "votes": votes,
                    "approvals": sum(1 for v in votes if v["approve"]),
                    "rejections": sum(1 for v in votes if not v["approve"]),
                }
            )
        rewards = [
            {
                "to": _cs(w["recipient"]),
                "amount": w["amount"],
                "role": w["role"],
                **self._where(w["block"], w["tx"]),
            }
            for w in self.db.query("SELECT * FROM rewards WHERE round = ? ORDER BY block, log_index", (n,))
        ]
        metrics = self._round_metrics(n)
        # issue 12: the election's seed (the hash of the last commit's block) and the committers
        # the accepted aggregate left out (UpdateExcluded), from the stored events
        election = None
        seed_row = self.db.one(
            "SELECT * FROM events WHERE name = 'ElectionSeed' AND round = ? "
            "ORDER BY block, log_index LIMIT 1",
            (n,),
        )
        if seed_row is not None:
            sa = json.loads(seed_row["args"])
            election = {
                "seed": sa["seed"],
                "seed_block": sa["seed_block"],
                "first_index": sa["first_index"],
                **self._where(seed_row["block"], seed_row["tx"]),
            }
        excluded = [
            {
                "member": _cs(json.loads(e["args"])["member"]),
                "aggregator": _cs(json.loads(e["args"])["aggregator"]),
                "reason": json.loads(e["args"]).get("reason", "unavailable"),
            }
            for e in self.db.query(
                "SELECT * FROM events WHERE name = 'UpdateExcluded' AND round = ? ORDER BY block, log_index",
                (n,),
            )
        ]
        # issue 20: members that took part without an update (verifier/aggregator only)
        serving = [
            {"member": _cs(json.loads(e["args"])["member"]), **self._where(e["block"], e["tx"])}
            for e in self.db.query(
                "SELECT * FROM events WHERE name = 'ServingOnly' AND round = ? ORDER BY block, log_index",
                (n,),
            )
        ]
        aggregate = None
        if r["final_attempt"] is not None:
            acc = next((a for a in attempts if a["attempt"] == r["final_attempt"]), None)
            aggregate = {
                "sha256": r["global_sha256"],
                "cid": r["global_cid"],
                "attempt": r["final_attempt"],
                "aggregator": acc["aggregator"] if acc else None,
                "included": acc["included"] if acc else None,
            }
        return {
            "round": n,
            "status": r["status"],
            "phase": self._phase(n, r["status"]),
            "reason": r["reason"],
            "base_sha256": r["base_sha256"],
            "base_cid": r["base_cid"],
            "commit_deadline": r["commit_deadline"],
            "commit_deadline_ms": self._deadline_ms(r["commit_deadline"]),
            "opened": self._where(r["opened_block"], r["opened_tx"]),
            "closed": self._where(r["closed_block"], r["closed_tx"]) if r["closed_block"] else None,
            "commits": commits,
            "serving": serving,
            "election": election,
            "attempts": attempts,
            "aggregate": aggregate,
            "excluded": excluded,
            "rewards": rewards,
            "rewards_total": str(sum(int(w["amount"]) for w in rewards)),
            "metrics": metrics,
        }

    def _round_metrics(self, n: int) -> Json:
        rows = self.db.query("SELECT * FROM metrics WHERE round = ? ORDER BY member", (n,))
        per = [
            {
                "member": _cs(m["member"]),
                "accuracy_ppm": m["accuracy_ppm"],
                "accuracy": m["accuracy_ppm"] / 1e6,
                "metric": decode_report(m["eval_set_hash"], m["accuracy_ppm"]),
                "n": m["n"],
                "eval_set_hash": m["eval_set_hash"],
                **self._where(m["block"], m["tx"]),
            }
            for m in rows
        ]
        # Macro/Min/H-mean are over accuracies only (a held-out loss is not averaged with them)
        return {"members": per, **fairness([m["accuracy"] for m in per if m["metric"]["kind"] != "sft"])}

    def names(self) -> dict[str, str]:
        """{checksummed address: display name} of the members that published one."""
        out: dict[str, str] = {}
        for m in self.db.query("SELECT address, multiaddrs FROM members"):
            name = peer_record.decode(m["multiaddrs"] or "")[1]
            if name:
                out[to_checksum_address(m["address"])] = name
        return out

    def members(self) -> Json:
        """Every member ever added, with PeerID and totals."""
        out = []
        for m in self.db.query("SELECT * FROM members ORDER BY added_block, address"):
            a = m["address"]
            out.append(
                {
                    "address": _cs(a),
                    "name": peer_record.decode(m["multiaddrs"] or "")[1],
                    "peer_id": m["peer_id"],
                    "multiaddrs": list(peer_record.decode(m["multiaddrs"] or "")[0]),
                    "active": m["removed_block"] is None and m["added_block"] is not None,
                    "added": self._where(m["added_block"], m["added_tx"]),
                    "commits": self._count("commits", "member", a),
                    "included": len(self._included_rounds(a)),
                    "aggregated": self._count_where(
                        "attempts", "aggregator = ? AND outcome = 'accepted'", (a,)
                    ),
                    "votes": self._count("votes", "voter", a),
                    "earned": str(self._sum_rewards("recipient = ?", (a,))),
                }
            )
        return {"members": out}

    def _count(self, table: str, column: str, value: str) -> int:
        return self._count_where(table, f"{column} = ?", (value,))

    def _count_where(self, table: str, where: str, params: tuple[Any, ...]) -> int:
        row = self.db.one(f"SELECT count(*) AS c FROM {table} WHERE {where}", params)
        return int(row["c"]) if row else 0

    def _included_rounds(self, addr: str) -> set[int]:
        rounds = set()
        for at in self.db.query(
            "SELECT round, included FROM attempts WHERE outcome = 'accepted' AND included IS NOT NULL"
        ):
            if addr in json.loads(at["included"]):
                rounds.add(int(at["round"]))
        return rounds

    def member_detail(self, addr: str) -> Json:
        """One institution's history: updates included, rounds aggregated, votes, tokens earned."""
        m = self.db.one("SELECT * FROM members WHERE address = ?", (addr,))
        if m is None:
            raise NotFound(f"{to_checksum_address(addr)} is not a member of this federation")
        included = self._included_rounds(addr)
        commits = [
            {
                "round": c["round"],
                "sha256": c["sha256"],
                "cid": c["cid"],
                "num_samples": c["num_samples"],
                "included": c["round"] in included,
                **self._where(c["block"], c["tx"]),
            }
            for c in self.db.query("SELECT * FROM commits WHERE member = ? ORDER BY round", (addr,))
        ]
        aggregations = [
            {
                "round": at["round"],
                "attempt": at["attempt"],
                "sha256": at["sha256"],
                "outcome": at["outcome"],
                **self._where(at["elected_block"], at["elected_tx"]),
            }
            for at in self.db.query(
                "SELECT * FROM attempts WHERE aggregator = ? ORDER BY round, attempt", (addr,)
            )
        ]
        votes = [
            {
                "round": v["round"],
                "attempt": v["attempt"],
                "approve": bool(v["approve"]),
                "outcome": v["outcome"],
                **self._where(v["block"], v["tx"]),
            }
            for v in self.db.query(
                "SELECT v.*, a.outcome FROM votes v LEFT JOIN attempts a "
                "ON a.round = v.round AND a.attempt = v.attempt "
                "WHERE v.voter = ? ORDER BY v.round, v.attempt",
                (addr,),
            )
        ]
        rewards = [
            {
                "round": w["round"],
                "amount": w["amount"],
                "role": w["role"],
                **self._where(w["block"], w["tx"]),
            }
            for w in self.db.query(
                "SELECT * FROM rewards WHERE recipient = ? ORDER BY block, log_index", (addr,)
            )
        ]
        # issue 12 (B4/B5): every accepted aggregate that left this member's update out, and by whom
        exclusions = [
            {
                "round": e["round"],
                "aggregator": _cs(json.loads(e["args"])["aggregator"]),
                "reason": json.loads(e["args"]).get("reason", "unavailable"),
                **self._where(e["block"], e["tx"]),
            }
            for e in self.db.query(
                "SELECT * FROM events WHERE name = 'UpdateExcluded' AND address = ? "
                "ORDER BY block, log_index",
                (addr,),
            )
        ]
        by_role: dict[str, int] = defaultdict(int)
        for w in rewards:
            by_role[w["role"]] += int(w["amount"])
        metrics = [
            {
                "round": x["round"],
                "accuracy_ppm": x["accuracy_ppm"],
                "accuracy": x["accuracy_ppm"] / 1e6,
                "metric": decode_report(x["eval_set_hash"], x["accuracy_ppm"]),
                "n": x["n"],
            }
            for x in self.db.query("SELECT * FROM metrics WHERE member = ? ORDER BY round", (addr,))
        ]
        return {
            "address": to_checksum_address(addr),
            "name": peer_record.decode(m["multiaddrs"] or "")[1],
            "peer_id": m["peer_id"],
            "multiaddrs": list(peer_record.decode(m["multiaddrs"] or "")[0]),
            "active": m["removed_block"] is None and m["added_block"] is not None,
            "added": self._where(m["added_block"], m["added_tx"]),
            "removed_block": m["removed_block"],
            "commits": commits,
            "updates_included": sorted(included),
            "aggregations": aggregations,
            "rounds_aggregated": sorted({a["round"] for a in aggregations if a["outcome"] == "accepted"}),
            "exclusions": exclusions,
            "votes": votes,
            "rewards": rewards,
            "earned": str(sum(by_role.values())),
            "earned_by_role": {k: str(v) for k, v in sorted(by_role.items())},
            "metrics": metrics,
        }

    def metrics(self) -> Json:
        """Per-institution figures and Macro-Acc / Min-Acc / H-mean per round (MetricsReported).

        ``accuracy`` holds multiple-choice accuracies (with ``nll``: mean NLL of the correct option);
        ``loss`` holds held-out losses of chat (SFT) sites, never mixed into the accuracy figures.
        ``privacy_rounds``: the epsilon each DP-SGD site reported spent up to each round, and
        ``privacy_budgets`` its whole budget (the latest it reported; docs/privacy.md)."""
        per_round: dict[int, dict[str, float]] = defaultdict(dict)
        nll: dict[int, dict[str, float]] = defaultdict(dict)
        loss: dict[int, dict[str, float]] = defaultdict(dict)
        rows = self.db.query(
            "SELECT round, member, accuracy_ppm, eval_set_hash FROM metrics ORDER BY round, member"
        )
        spent: dict[int, dict[str, float | None]] = defaultdict(dict)
        budgets: dict[str, float | None] = {}
        for x in rows:
            r, who = int(x["round"]), to_checksum_address(x["member"])
            what = decode_report(x["eval_set_hash"], x["accuracy_ppm"])
            dp = what["privacy"]
            if isinstance(dp, dict):
                spent[r][who] = dp["epsilon"]
                budgets[who] = dp["budget"]
            if what["kind"] == "sft":
                if isinstance(what["value"], float):
                    loss[r][who] = what["value"]
                continue
            per_round[r][who] = x["accuracy_ppm"] / 1e6
            if isinstance(what["aux"], float):
                nll[r][who] = what["aux"]
        members = sorted({m for accs in per_round.values() for m in accs})
        rounds = [
            {"round": n, "accuracy": accs, "nll": nll.get(n, {}), **fairness(list(accs.values()))}
            for n, accs in sorted(per_round.items())
        ]
        loss_members = sorted({m for v in loss.values() for m in v})
        loss_rounds = [{"round": n, "loss": v} for n, v in sorted(loss.items())]
        return {
            "members": members,
            "rounds": rounds,
            "loss_members": loss_members,
            "loss_rounds": loss_rounds,
            "privacy_members": sorted(budgets),
            "privacy_budgets": budgets,
            "privacy_rounds": [{"round": n, "epsilon": v} for n, v in sorted(spent.items())],
            "names": self.names(),
        }

    def verify(self, sha: str) -> Json:
        """Which on-chain commitments (updates, aggregates, global adapters) have this sha256."""
        matches: list[Json] = []
        for c in self.db.query("SELECT * FROM commits WHERE sha256 = ? ORDER BY round", (sha,)):
            matches.append(
                {
                    "kind": "update",
                    "round": c["round"],
                    "member": _cs(c["member"]),
                    "cid": c["cid"],
                    "num_samples": c["num_samples"],
                    **self._where(c["block"], c["tx"]),
                }
            )
        for at in self.db.query("SELECT * FROM attempts WHERE sha256 = ? ORDER BY round, attempt", (sha,)):
            matches.append(
                {
                    "kind": "aggregate",
                    "round": at["round"],
                    "attempt": at["attempt"],
                    "member": _cs(at["aggregator"]),
                    "cid": at["cid"],
                    "outcome": at["outcome"],
                    **self._where(at["submit_block"], at["submit_tx"]),
                }
            )
        initial = (self._snapshot().get("initial_adapter") or {}).get("sha256")
        if initial == sha:
            matches.append({"kind": "initial", "round": 0, "member": None})
        return {"sha256": sha, "matches": matches}

    def proposals(self) -> Json:
        """Governance (issue 21): every proposal, newest first, with its ballots and outcome
        ("open", "queued" for the next round, "executed", "rejected", "void"; an open one past
        its deadline is "expired")."""
        snap = self._snapshot()
        now = self._time(self.db.last_block())
        out = []
        for p in self.db.query("SELECT * FROM proposals ORDER BY id DESC"):
            votes = self.db.query(
                "SELECT * FROM proposal_votes WHERE id = ? ORDER BY block, log_index", (p["id"],)
            )
            deadline_ms = self._deadline_ms(p["deadline"])
            status = p["status"]
            if status == "open" and now is not None and deadline_ms is not None and now >= deadline_ms:
                status = "expired"
            kind = KINDS.get(p["kind"], str(p["kind"]))
            out.append(
                {
                    "id": p["id"],
                    "kind": kind,
                    "param": PARAM_NAMES[p["param"]]
                    if kind == "set" and p["param"] < len(PARAM_NAMES)
                    else None,
                    "target": _cs(p["target"]) if kind != "set" else None,
                    "value": p["value"] if kind == "set" else None,
                    "proposer": _cs(p["proposer"]),
                    "deadline_ms": deadline_ms,
                    "status": status,
                    "reason": p["reason"],
                    "yes": p["yes"],
                    "no": p["no"],
                    "required": p["required"],
                    "votes": [{"voter": _cs(v["voter"]), "support": bool(v["support"])} for v in votes],
                    "created": self._where(p["created_block"], p["created_tx"]),
                    "decided": self._where(p["decided_block"], p["decided_tx"]),
                }
            )
        return {
            "successor": _cs(snap.get("successor")),
            "deployer": _cs(snap.get("deployer")),
            "proposals": out,
        }

    def events(self, limit: int = 50) -> Json:
        """The newest events, newest first."""
        rows = self.db.query("SELECT * FROM events ORDER BY block DESC, log_index DESC LIMIT ?", (limit,))
        return {
            "events": [
                {
                    "name": e["name"],
                    "round": e["round"],
                    "address": _cs(e["address"]),
                    "args": json.loads(e["args"]),
                    "log_index": e["log_index"],
                    **self._where(e["block"], e["tx"]),
                }
                for e in rows
            ]
        }


def fairness(accs: list[float]) -> Json:
    """Macro-Acc (mean), Min-Acc and harmonic mean of per-institution accuracies (None when empty)."""
    if not accs:
        return {"macro": None, "min": None, "hmean": None}
    macro = sum(accs) / len(accs)
    hmean = 0.0 if min(accs) <= 0 else len(accs) / sum(1.0 / a for a in accs)
    return {"macro": macro, "min": min(accs), "hmean": hmean}


def route(api: Api, path: str, query: dict[str, list[str]]) -> tuple[int, Json]:
    """Dispatch an /api/... path (without query string) to its endpoint."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "api":
        raise NotFound(f"no such endpoint {path[:120]!r}: see /api for the list")
    rest = parts[1:]
    simple: dict[str, Callable[[], Json]] = {
        "status": api.status,
        "overview": api.overview,
        "rounds": api.rounds,
        "members": api.members,
        "metrics": api.metrics,
        "proposals": api.proposals,
    }
    if not rest:
        return 200, {"endpoints": ENDPOINTS}
    if len(rest) == 1 and rest[0] in simple:
        return 200, simple[rest[0]]()
    if len(rest) == 1 and rest[0] == "events":
        raw = (query.get("limit") or ["50"])[0]
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= 1000:
            raise BadRequest(f"bad limit {raw[:20]!r}: expected an integer from 1 to 1000")
        return 200, api.events(int(raw))
    if len(rest) == 2 and rest[0] == "rounds":
        return 200, api.round_detail(parse_round(rest[1]))
    if len(rest) == 2 and rest[0] == "members":
        return 200, api.member_detail(parse_address(rest[1]))
    if len(rest) == 2 and rest[0] == "verify":
        return 200, api.verify(parse_sha256(rest[1]))
    raise NotFound(f"no such endpoint {path[:120]!r}: see /api for the list")


ENDPOINTS = [
    "/api/status",
    "/api/overview",
    "/api/rounds",
    "/api/rounds/<round>",
    "/api/members",
    "/api/members/<address>",
    "/api/metrics",
    "/api/verify/<sha256>",
    "/api/events?limit=N",
    "/api/proposals",
]


def safe_route(api: Api, path: str, query: dict[str, list[str]]) -> tuple[int, Json]:
    """`route`, but every ApiError becomes its status + JSON error (used by the server)."""
    try:
        return route(api, path, query)
    except ApiError as e:
        return e.status, {"error": e.message, "status": e.status}
    except sqlite3.Error as e:  # database busy or damaged: not the reader's fault
        return 503, {"error": f"index unavailable ({type(e).__name__}); retry shortly", "status": 503}
