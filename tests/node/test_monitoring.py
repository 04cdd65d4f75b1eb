"""The monitoring endpoint over real HTTP: metrics in the Prometheus text format, a health check that
turns 503 when the round machine stops ticking, 404 elsewhere, and a taken port is an OSError."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chain import types as ev
from node.monitoring import Monitor, start_monitoring


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_health_and_errors() -> None:
    mon = Monitor(stale_after_s=0.5)
    server = start_monitoring("127.0.0.1:0", mon)
    base = f"http://127.0.0.1:{server.port}"
    try:
        mon.status({"round": 4, "phase": "verify", "role": "verifier", "attempt": 1})
        mon.event(ev.VoteCast(1, 0, "0x", round=4, attempt=1, voter="0xAbC", approve=True), "0xabc")
        mon.trained(3.5, 120.0)
        mon.transferred("in", 2048)
        mon.chain_failed(revert=True)
        mon.balances(15 * 10**18, 2 * 10**17)
        mon.evaluated("sft", 5.25)
        mon.ticked()
        mon.kept_alive(2.5)
        code, body = _get(base + "/metrics")
        assert code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples
        }
        assert samples[("medfed_round", ())] == 4
        assert samples[("medfed_phase", (("phase", "verify"),))] == 1
        assert samples[("medfed_phase", (("phase", "commit"),))] == 0
        assert samples[("medfed_role", (("role", "verifier"),))] == 1
        assert samples[("medfed_last_vote_round", ())] == 4 and samples[("medfed_last_vote_approve", ())] == 1
        assert samples[("medfed_training_tokens_per_second", ())] == 120
        assert samples[("medfed_transfer_bytes_total", (("direction", "in"),))] == 2048
        assert samples[("medfed_chain_tx_failures_total", (("kind", "revert"),))] == 1
        assert samples[("medfed_token_balance", ())] == 15
        assert samples[("medfed_eval_value", (("kind", "sft"),))] == 5.25
        assert samples[("medfed_keepalives_total", ())] == 1
        assert samples[("medfed_last_keepalive_seconds", ())] == 2.5
        code, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        time.sleep(0.7)  # no tick for longer than stale_after_s
        code, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["status"] == "stale"
        assert _get(base + "/secrets")[0] == 404
        with pytest.raises(OSError):
            start_monitoring(f"127.0.0.1:{server.port}", Monitor())
    finally:
        server.stop()
