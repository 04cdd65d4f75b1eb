"""Prometheus metrics and a health endpoint on a local HTTP port (``[monitoring]``).

``GET /metrics`` answers in the Prometheus text format; ``GET /healthz`` answers 200 with a JSON
body while the round machine ticks, and 503 when its last successful look at the chain is older
than ``stale_after_s`` (the node is stuck, or the chain is unreachable). Nothing from the site's
data is exported: only round numbers, phases, timings, byte counts and balances.

Metric names (all prefixed ``medfed_``) are listed in docs/operations.md with the alerts a site
should set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("medfed.monitoring")
PHASES = ("none", "commit", "aggregate", "verify", "finalized", "failed")
ROLES = ("idle", "observer", "participant", "aggregator", "verifier")


class Monitor:
    """The node's metrics (one registry per node, so tests can run several in one process)."""

    def __init__(self, stale_after_s: float = 120.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stale_after_s = stale_after_s
        self.info = Info("medfed_node", "Who this node is (address, coordinator, data kind)", registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.round = gauge("medfed_round", "The federation's live round (from the chain)")
        self.attempt = gauge("medfed_round_attempt", "Aggregation attempt of the live round")
        self.phase = gauge("medfed_phase", "1 for the live round's phase, 0 for the others", ("phase",))
        self.role = gauge("medfed_role", "1 for this node's role in the live round", ("role",))
        self.last_commit = gauge("medfed_last_commit_round", "Last round this node committed an update to")
        self.last_commit_ts = gauge(
            "medfed_last_commit_timestamp_seconds", "When this node's last commit was seen on-chain"
        )
        self.last_vote = gauge("medfed_last_vote_round", "Last round this node voted in")
        self.last_vote_approve = gauge(
            "medfed_last_vote_approve", "1 if this node's last vote approved the aggregate, 0 if it rejected"
        )
        self.last_vote_ts = gauge("medfed_last_vote_timestamp_seconds", "When this node last voted")
        self.train_seconds = gauge("medfed_last_training_seconds", "Wall time of the last local training")
        self.train_seconds_total = counter(
            "medfed_training_seconds", "Wall time spent in local training (all rounds)"
        )
        self.tokens_per_s = gauge(
            "medfed_training_tokens_per_second", "Throughput of the last local training"
        )
        self.eval_figure = gauge(
            "medfed_eval_value",
            "Last held-out figure of the global adapter (accuracy for mc, loss in nats for sft)",
            ("kind",),
        )
        self.transfer_bytes = counter(
            "medfed_transfer_bytes", "Adapter bytes fetched (in) and offered to peers (out)", ("direction",)
        )
        self.tx_failures = counter(
            "medfed_chain_tx_failures", "Chain calls that failed (revert: the contract refused)", ("kind",)
        )
        self.tick_errors = counter("medfed_tick_errors", "Round-machine ticks that raised")
        self.last_tick = gauge(
            "medfed_last_tick_timestamp_seconds", "When the round machine last looked at the chain"
        )
        self.token_balance = gauge("medfed_token_balance", "Reward token balance (whole tokens)")
        self.native_balance = gauge("medfed_native_balance", "Gas coin balance (whole coins)")
        self.keepalives = counter("medfed_keepalives", "Keepalive transactions this node sent (idle chain)")
        self.keepalive_seconds = gauge(
            "medfed_last_keepalive_seconds", "How long this node's last keepalive took to be mined"
        )
        self.last_tick_at = 0.0
        self.round_now = 0
        self.up_since = time.time()
        for d in ("in", "out"):
            self.transfer_bytes.labels(direction=d)
        for k in ("revert", "error"):
            self.tx_failures.labels(kind=k)

    # ---------------------------------------------------------------- updates from the node
    def status(self, kv: dict[str, Any]) -> None:
        """Mirror Node.set_status (round, phase, role, attempt)."""
        if isinstance(kv.get("round"), int):
            self.round.set(kv["round"])
            self.round_now = kv["round"]
        if isinstance(kv.get("attempt"), int):
            self.attempt.set(kv["attempt"])
        if kv.get("phase") in PHASES:
            for p in PHASES:
                self.phase.labels(phase=p).set(1 if p == kv["phase"] else 0)
        if kv.get("role") in ROLES:
            for r in ROLES:
                self.role.labels(role=r).set(1 if r == kv["role"] else 0)

    def event(self, e: Any, me: str) -> None:
        """Our own commits and votes, as the chain records them."""
        from chain import types as ev

        if isinstance(e, ev.UpdateCommitted) and e.member.lower() == me:
            self.committed(e.round)
        elif isinstance(e, ev.VoteCast) and e.voter.lower() == me:
            self.voted(e.round, e.approve)

    def ticked(self) -> None:
        self.last_tick_at = time.time()
        self.last_tick.set(self.last_tick_at)

    def committed(self, round_: int) -> None:
        self.last_commit.set(round_)
        self.last_commit_ts.set(time.time())

    def voted(self, round_: int, approve: bool) -> None:
        self.last_vote.set(round_)
        self.last_vote_approve.set(1 if approve else 0)
        self.last_vote_ts.set(time.time())

    def trained(self, seconds: float, tokens_per_s: float) -> None:
        self.train_seconds.set(seconds)
        self.train_seconds_total.inc(max(0.0, seconds))
        self.tokens_per_s.set(tokens_per_s)

    def evaluated(self, kind: str, value: float) -> None:
        self.eval_figure.labels(kind=kind).set(value)

    def transferred(self, direction: str, n_bytes: int) -> None:
        self.transfer_bytes.labels(direction=direction).inc(max(0, n_bytes))

    def chain_failed(self, revert: bool) -> None:
        self.tx_failures.labels(kind="revert" if revert else "error").inc()

    def kept_alive(self, seconds: float) -> None:
        """A keepalive of ours was mined after ``seconds`` (node/keepalive.py)."""
        self.keepalives.inc()
        self.keepalive_seconds.set(seconds)

    def balances(self, token_wei: int, native_wei: int) -> None:
        self.token_balance.set(token_wei / 10**18)
        self.native_balance.set(native_wei / 10**18)

    # ---------------------------------------------------------------- health
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy while the last tick is recent (or the node is still starting)."""
        last = self.last_tick_at
        now = time.time()
        age = now - last if last else None
        starting = last == 0 and now - self.up_since < self.stale_after_s
        ok = starting or (age is not None and age <= self.stale_after_s)
        body = {
            "status": "ok" if ok else "stale",
            "last_tick_age_s": None if age is None else round(age, 1),
            "round": self.round_now,
        }
        return ok, body

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MonitoringServer:
    """A small threaded HTTP server: /metrics, /healthz (anything else: 404)."""

    def __init__(self, monitor: Monitor, host: str, port: int) -> None:
        mon = monitor

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, mon.render(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/health"):
                    ok, body = mon.health()
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("monitoring: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="medfed-monitoring", daemon=True
        )

    def start(self) -> MonitoringServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_monitoring(listen: str, monitor: Monitor) -> MonitoringServer:
    """Serve ``monitor`` on ``host:port`` (port 0: any free port); OSError if the port is taken."""
    host, _, port = listen.rpartition(":")
    return MonitoringServer(monitor, host.strip("[]"), int(port)).start()
