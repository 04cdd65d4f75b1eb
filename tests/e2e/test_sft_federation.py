"""End to end on a site's own chat data: three `medfed-node start` processes (tiny model, real anvil,
real libp2p) fine-tune on a chat-format SFT dataset this test writes, for two rounds.

- the held-out loss each site reports on-chain (tagged as a loss, node.metric_report) goes down;
- the Prometheus endpoint of a node, read over HTTP during the run, shows the round gauge moving;
- each institution's display name is in its on-chain peer record;
- nothing from the data leaves the sites: no row's text appears in any transaction or event
  log on the chain, in any adapter file a node serves (weights and config metadata), or in the
  gossip announcements the nodes exchange (recorded by a listening host on the nodes' topic).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e_kit import history, run

from chain import types as ev
from localnet.federation import down, write_summary
from node.metric_report import decode_report

pytestmark = pytest.mark.slow

SITES = ("St. Mary's <Clinic>", "Hôpital Nord", "Kantonsspital 3")


def _rows(site: int, ids: range) -> list[dict[str, Any]]:
    """Chat rows; every row carries a unique marker (so a leak of any row can be searched for)."""
    return [
        {
            "messages": [
                {"role": "system", "content": "You are a careful clinical assistant."},
                {"role": "user", "content": f"Patient ZQX{site}R{i}Q reports mild fever. Advice?"},
                {
                    "role": "assistant",
                    "content": f"Rest, fluids and review in two days (ref ZQX{site}R{i}A).",
                },
            ]
        }
        for i in ids
    ]


def _write_sites(root: Path) -> tuple[Path, list[str]]:
    markers = []
    lines = []
    for s, name in enumerate(SITES):
        d = root / f"site{s}"
        d.mkdir(parents=True)
        for part, rows in (("train", _rows(s, range(24))), ("eval", _rows(s, range(100, 106)))):
            (d / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            for r in rows:
                markers += re.findall(r"ZQX\d+R\d+[QA]", json.dumps(r))
        lines.append(
            f"[[site]]\nname = {json.dumps(name)}\n"
            f'train = [{{ path = "site{s}/train.jsonl", format = "chat" }}]\n'
            f'eval = [{{ path = "site{s}/eval.jsonl", format = "chat" }}]\n'
        )
    plan = root / "sites.toml"
    plan.write_text("\n".join(lines))
    return plan, markers


class MetricsWatcher(threading.Thread):
    """GETs /metrics and /healthz of a node every 0.5 s; records every medfed_round value seen."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.rounds, self.health = port, [], []
        self.stop = threading.Event()
        self.sample = ""

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                m = re.search(r"^medfed_round (\S+)$", text, re.M)
                if m and (not self.rounds or self.rounds[-1] != float(m.group(1))):
                    self.rounds.append(float(m.group(1)))
                if "medfed_training_tokens_per_second" in text:
                    self.sample = text
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    self.health.append(r.status)
            except OSError:
                pass  # the node is still loading
            self.stop.wait(0.5)


def _chain_bytes(fed: Any) -> bytes:
    """Every transaction's input and every log's data since the deployment, concatenated."""
    w3 = fed.client().w3
    out = bytearray()
    for n in range(fed.devnet.deploy_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(n, full_transactions=True)
        for tx in block["transactions"]:
            out += bytes(tx["input"])
            for lg in w3.eth.get_transaction_receipt(tx["hash"])["logs"]:
                out += bytes(lg["data"])
    return bytes(out)


def test_chat_sft_federation_loss_goes_down_metrics_move_and_no_data_leaves(tmp_path: Path) -> None:
    plan, markers = _write_sites(tmp_path / "data")
    assert len(markers) == 3 * 30 * 2
    watchers: list[MetricsWatcher] = []

    def start_watch() -> None:  # the nodes' ports are known once launch() wrote the configs
        for _ in range(600):
            cfg = tmp_path / "fed" / "nodes" / "node0" / "medfed.toml"
            if cfg.exists() and 'listen = "127.0.0.1:' in cfg.read_text():
                port = int(re.search(r'listen = "127\.0\.0\.1:(\d+)"', cfg.read_text()).group(1))  # type: ignore[union-attr]
                w = MetricsWatcher(port)
                w.start()
                watchers.append(w)
                return
            time.sleep(0.2)

    t = threading.Thread(target=start_watch, daemon=True)
    t.start()
    fed, done = run(
        tmp_path / "fed", 3, 2, {}, restart_crashed=False, timeout_s=300, data=plan, monitoring=True
    )
    try:
        for w in watchers:
            w.stop.set()
        assert done == {1: "finalized", 2: "finalized"}
        summary = write_summary(fed)
        base = summary["base"]["loss"]
        r1, r2 = (r["loss"] for r in summary["rounds"])
        assert sorted(base) == sorted(SITES) and sorted(r2) == sorted(SITES)
        mean = [sum(x.values()) / len(x) for x in (base, r1, r2)]
        assert mean[0] > mean[1] > mean[2], mean
        assert all(r2[s] < base[s] for s in SITES), (base, r2)
        assert summary["rounds"][0]["accuracy"] == {}  # chat sites report no accuracy

        # on-chain: the reports say they are losses; the names are in the peer records
        h = history(fed)
        reports = h.of(ev.MetricsReported)
        assert len(reports) == 6
        assert all(decode_report(bytes(e.eval_set_hash), e.accuracy_ppm)["kind"] == "sft" for e in reports)
        client = fed.client()
        names = {client.member_peer(a).display_name for a in fed.devnet.addresses}
        assert names == set(SITES)

        # monitoring: the round gauge moved while we watched (0/1 -> 2)
        (w,) = watchers
        assert w.rounds and max(w.rounds) >= 2 and len(set(w.rounds)) >= 2, w.rounds
        assert 200 in w.health
        assert re.search(r"^medfed_training_tokens_per_second [1-9]", w.sample, re.M)
        assert re.search(r'^medfed_transfer_bytes_total\{direction="in"\} [1-9]', w.sample, re.M)

        # nothing from the data left the sites: chain, adapter files (weights + metadata)
        chain = _chain_bytes(fed)
        assert len(chain) > 1000
        sent_files = [
            p
            for p in (tmp_path / "fed" / "nodes").rglob("*")
            if p.is_file() and (p.suffix == ".safetensors" or p.name == "adapter_config.json")
        ]
        assert len(sent_files) >= 3
        blobs = [chain, chain.hex().encode()] + [p.read_bytes() for p in sent_files]
        for marker in markers:
            needle = marker.encode()
            assert not any(needle in b or needle.hex().encode() in b for b in blobs), marker
        gossip = [log for i in range(3) for log in _gossip_lines(fed, i)]
        assert gossip, "no gossip announcements were recorded"
        assert not any(m in line for line in gossip for m in markers)
        print(f"\nheld-out loss base/r1/r2 (mean of 3 sites): {mean}; round gauge seen: {w.rounds}")

    finally:
        down(fed.dir)  # the devnet (anvil) too, not only the nodes


def _gossip_lines(fed: Any, i: int) -> list[str]:
    """The announcements node i received (logged as wire JSON by the node's gossip reader)."""
    return [line for line in fed.log_path(i).read_text(errors="replace").splitlines() if "gossip:" in line]
