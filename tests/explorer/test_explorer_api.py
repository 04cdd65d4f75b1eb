"""The explorer's JSON API answers with what is on-chain, and refuses bad input with a clear 4xx."""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from pathlib import Path

import pytest
from explorer_http import get_json
from explorer_scenario import Scenario

from chain.client import CoordinatorClient
from chain.profile import DEVNET
from node.explorer.api import Api, fairness, route
from node.explorer.db import Database
from node.explorer.errors import NotFound
from node.explorer.server import ExplorerHandle, serve


@pytest.fixture(scope="module")
def chain(federation: Scenario) -> CoordinatorClient:
    return CoordinatorClient(federation.rpc_url, federation.coordinator, None, DEVNET)


def api(explorer: ExplorerHandle, path: str) -> dict:
    status, body, _ = get_json(explorer.url + "api/" + path)
    assert status == 200, body
    return body


def test_status_reports_the_indexed_head_and_chain_identity(
    explorer: ExplorerHandle, federation: Scenario, chain: CoordinatorClient
) -> None:
    s = api(explorer, "status")
    assert s["chain_id"] == 16166
    assert s["coordinator"] == federation.coordinator
    assert s["last_block"] == chain.block_number()
    assert s["time_unit_ms"] is False
    assert s["last_block_time_ms"] == chain.w3.eth.get_block(s["last_block"])["timestamp"] * 1000


def test_overview_matches_contract_views(
    explorer: ExplorerHandle, federation: Scenario, chain: CoordinatorClient
) -> None:
    o = api(explorer, "overview")
    assert [m["address"] for m in o["members"]] == [w.address for w in federation.members]
    assert {m["address"]: m["peer_id"] for m in o["members"]} == federation.peer_ids
    assert all(m["active"] for m in o["members"])
    token = chain.w3.eth.contract(
        address=chain.token_address(), abi=[_abi("totalSupply"), _abi("symbol", "string")]
    )
    assert o["token"]["total_supply"] == str(token.functions.totalSupply().call())
    assert o["token"]["symbol"] == token.functions.symbol().call()
    paid = sum(a for r in federation.rounds for _, a, _ in r.rewards)
    assert o["token"]["rewards_paid"] == str(paid) == o["token"]["total_supply"]
    ga = chain.global_adapter()
    assert o["global_adapter"] == {"sha256": ga.sha256.hex(), "cid": ga.cid, "round": 3}
    assert o["global_adapter"]["sha256"] == federation.round(3).attempts[-1].sha256
    assert all(r["phase"] == r["status"] for r in o["rounds"])  # no live round: all final
    assert [(r["round"], r["status"]) for r in o["rounds"]] == [
        (3, "finalized"),
        (2, "failed"),
        (1, "finalized"),
    ]
    assert o["federation"]["base_model"] == chain.base_model()
    assert o["federation"]["params"]["max_attempts"] == 2


def _abi(name: str, out: str = "uint256") -> dict:
    return {
        "name": name,
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"type": out}],
    }


def test_round_detail_lists_every_commit_attempt_vote_and_reward(
    explorer: ExplorerHandle, federation: Scenario
) -> None:
    for rec in federation.rounds:
        r = api(explorer, f"rounds/{rec.round}")
        assert r["status"] == rec.status
        assert [
            (c["member"], c["sha256"], c["cid"], c["num_samples"], c["tx"], c["block"]) for c in r["commits"]
        ] == [(c.member, c.sha256, c.cid, c.num_samples, c.tx, c.block) for c in rec.commits]
        assert [(a["attempt"], a["aggregator"], a["outcome"]) for a in r["attempts"]] == [
            (a.attempt, a.aggregator, a.outcome) for a in rec.attempts
        ]
        for got, want in zip(r["attempts"], rec.attempts, strict=True):
            assert got["sha256"] == want.sha256
            assert {v["voter"]: v["approve"] for v in got["votes"]} == want.votes
            if want.sha256:
                assert got["included"] == want.included
        assert [(w["to"], int(w["amount"]), w["role"]) for w in r["rewards"]] == rec.rewards
        assert int(r["rewards_total"]) == sum(a for _, a, _ in rec.rewards)
        assert {m["member"]: m["accuracy_ppm"] for m in r["metrics"]["members"]} == rec.metrics
        # the election: seeded by the last commit's block, drawn in a later block
        e = r["election"]
        assert e["seed_block"] == max(c.block for c in rec.commits) < e["block"]
        assert len(e["seed"]) == 64 and rec.commits[e["first_index"]].member == rec.attempts[0].aggregator
        assert r["excluded"] == []  # every aggregate in the scenario includes every committer


def test_failed_round_shows_reason_and_pays_nothing(explorer: ExplorerHandle) -> None:
    r = api(explorer, "rounds/2")
    assert r["status"] == "failed"
    assert r["reason"] == "aggregator timeout"
    assert [a["outcome"] for a in r["attempts"]] == ["rejected", "aggregator timeout"]
    assert r["rewards"] == [] and r["rewards_total"] == "0"
    assert r["aggregate"] is None


def test_member_history_totals_match_token_balances(
    explorer: ExplorerHandle, federation: Scenario, chain: CoordinatorClient
) -> None:
    for w in federation.members:
        m = api(explorer, f"members/{w.address.lower()}")
        assert m["address"] == w.address
        assert m["peer_id"] == federation.peer_ids[w.address]
        assert int(m["earned"]) == chain.token_balance(w.address)
        assert [c["round"] for c in m["commits"]] == [1, 2, 3]
        assert m["updates_included"] == [1, 3]
        aggregated = [
            r.round
            for r in federation.rounds
            if r.status == "finalized" and r.attempts[-1].aggregator == w.address
        ]
        assert m["rounds_aggregated"] == aggregated
        # committed to a finalized round but left out of its aggregate: on-chain UpdateExcluded
        left_out = [
            (r.round, r.attempts[-1].aggregator)
            for r in federation.rounds
            if r.status == "finalized" and w.address not in r.attempts[-1].included
        ]
        assert [(x["round"], x["aggregator"]) for x in m["exclusions"]] == left_out
        assert all(x["reason"] == "unavailable" for x in m["exclusions"])  # the scenario claims none invalid
        voted = [
            (r.round, a.attempt, a.votes[w.address])
            for r in federation.rounds
            for a in r.attempts
            if w.address in a.votes
        ]
        assert [(v["round"], v["attempt"], v["approve"]) for v in m["votes"]] == voted
        assert [x["accuracy_ppm"] for x in m["metrics"]] == [
            federation.round(1).metrics[w.address],
            federation.round(3).metrics[w.address],
        ]


def test_metrics_give_fairness_per_round(explorer: ExplorerHandle, federation: Scenario) -> None:
    mt = api(explorer, "metrics")
    assert [r["round"] for r in mt["rounds"]] == [1, 3]
    for r in mt["rounds"]:
        accs = [p / 1e6 for p in federation.round(r["round"]).metrics.values()]
        assert r["macro"] == pytest.approx(sum(accs) / len(accs))
        assert r["min"] == pytest.approx(min(accs))
        assert r["hmean"] == pytest.approx(len(accs) / sum(1 / a for a in accs))
    assert fairness([0.5, 1.0]) == {"macro": 0.75, "min": 0.5, "hmean": pytest.approx(2 / 3)}
    assert fairness([]) == {"macro": None, "min": None, "hmean": None}


def test_verify_finds_updates_and_aggregates_by_sha256(
    explorer: ExplorerHandle, federation: Scenario
) -> None:
    c = federation.round(2).commits[1]
    v = api(explorer, f"verify/{c.sha256}")
    assert v["matches"] == [
        {
            "kind": "update",
            "round": 2,
            "member": c.member,
            "cid": c.cid,
            "num_samples": c.num_samples,
            "block": c.block,
            "tx": c.tx,
            "time_ms": v["matches"][0]["time_ms"],
        }
    ]
    rejected = federation.round(3).attempts[0]
    v = api(explorer, f"verify/0x{rejected.sha256.upper()}")
    assert [(m["kind"], m["round"], m["attempt"], m["member"], m["outcome"]) for m in v["matches"]] == [
        ("aggregate", 3, 0, rejected.aggregator, "rejected")
    ]
    outsider = hashlib.sha256(federation.outsider_file.read_bytes()).hexdigest()
    assert api(explorer, f"verify/{outsider}") == {"sha256": outsider, "matches": []}
    initial = hashlib.sha256(
        federation.rounds[0].commits[0].path.with_name("initial.safetensors").read_bytes()
    )
    assert api(explorer, f"verify/{initial.hexdigest()}")["matches"] == [
        {"kind": "initial", "round": 0, "member": None}
    ]


def test_events_feed_is_newest_first(explorer: ExplorerHandle) -> None:
    ev = api(explorer, "events?limit=5")["events"]
    assert len(ev) == 5
    assert [(e["block"], e["log_index"]) for e in ev] == sorted(
        ((e["block"], e["log_index"]) for e in ev), reverse=True
    )
    assert ev[0]["name"] == "MetricsReported"


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("rounds/99", 404, "round 99 is not on-chain"),
        ("rounds/abc", 400, "bad round"),
        ("rounds/-1", 400, "bad round"),
        ("members/0x1234", 400, "bad address"),
        ("members/not-an-address", 400, "bad address"),
        ("members/0x000000000000000000000000000000000000dEaD", 404, "is not a member"),
        ("verify/abc", 400, "bad sha256"),
        ("verify/" + "g" * 64, 400, "bad sha256"),
        ("events?limit=0", 400, "bad limit"),
        ("nothing/here", 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_a_json_4xx_without_a_stack_trace(
    explorer: ExplorerHandle, path: str, status: int, needle: str
) -> None:
    got, body, headers = get_json(explorer.url + "api/" + path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert needle in body["error"] and body["status"] == status
    assert "Traceback" not in str(body) and 'File "' not in str(body)


def test_static_page_is_self_contained(explorer: ExplorerHandle) -> None:
    with urllib.request.urlopen(explorer.url, timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http://" not in html and "https://" not in html
    for name in ("app.js", "sha256.js", "style.css"):
        with urllib.request.urlopen(explorer.url + name, timeout=10) as r:
            body = r.read().decode()
        assert "https://" not in body.replace("http://www.w3.org/2000/svg", "")
    status, body, _ = get_json(explorer.url + "..%2f..%2fetc%2fpasswd")
    assert status == 404 and "no such page" in body["error"]
    assert get_json(explorer.url + "api")[1]["endpoints"][0] == "/api/status"


def test_an_empty_index_answers_every_endpoint() -> None:
    """Before the first sync (or on a federation without rounds) nothing crashes."""
    a = Api(Database(":memory:"))
    o = a.overview()
    assert o["members"] == [] and o["rounds"] == [] and o["global_adapter"] is None
    assert o["status"]["last_block"] is None
    assert a.metrics() == {
        "members": [],
        "rounds": [],
        "loss_members": [],
        "loss_rounds": [],
        "privacy_members": [],
        "privacy_budgets": {},
        "privacy_rounds": [],
        "names": {},
    }
    assert a.verify("00" * 32)["matches"] == []
    assert route(a, "/api/events", {})[1] == {"events": []}
    assert route(a, "/api/proposals", {})[1] == {"successor": None, "deployer": None, "proposals": []}
    with pytest.raises(NotFound):
        a.round_detail(1)


def test_an_unexpected_error_is_a_generic_json_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(tmp_path / "broken.sqlite")
    db.set_meta("snapshot", "{not json")  # a damaged index
    httpd, url = serve(db, "127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        status, body, _ = get_json(url + "api/overview")
        assert status == 500
        assert body == {"error": "internal error; see the explorer's log", "status": 500}
        assert "JSONDecodeError" in caplog.text  # the operator gets the details
        assert get_json(url + "api/rounds")[0] == 200  # the rest keeps working
    finally:
        httpd.shutdown()
        httpd.server_close()
        db.close()


def test_rounds_and_members_lists(explorer: ExplorerHandle, federation: Scenario) -> None:
    rounds = api(explorer, "rounds")["rounds"]
    assert [(r["round"], r["status"], r["commits"], r["attempts"]) for r in rounds] == [
        (rec.round, rec.status, len(rec.commits), len(rec.attempts)) for rec in reversed(federation.rounds)
    ]
    assert [r["aggregator"] for r in rounds] == [
        rec.attempts[-1].aggregator if rec.status == "finalized" else None
        for rec in reversed(federation.rounds)
    ]
    assert rounds[1]["reason"] == "aggregator timeout" and rounds[1]["rewards_paid"] == "0"
    members = api(explorer, "members")["members"]
    assert [m["address"] for m in members] == [w.address for w in federation.members]
    for m in members:
        assert m["commits"] == 3 and m["included"] == 2
        assert int(m["earned"]) == sum(
            a for r in federation.rounds for to, a, _ in r.rewards if to == m["address"]
        )
        assert m["multiaddrs"] and m["multiaddrs"][0].startswith("/ip4/127.0.0.1/tcp/")


def _raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes (anything urllib refuses to send); return status, headers, body."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def test_malformed_requests_get_a_json_4xx_never_a_500(tmp_path: Path) -> None:
    """B8: Unicode or 4,301-digit limits, over-long or odd page names, unknown methods, broken
    request lines: each answers a 4xx with a JSON body, never a 500 or an HTML page."""
    import json

    db = Database(tmp_path / "index.sqlite")
    httpd, url = serve(db, "127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        for path, needle in [
            ("api/events?limit=\u00b2", "bad limit"),
            ("api/events?limit=%C2%B2", "bad limit"),
            ("api/events?limit=" + "9" * 4301, "bad limit"),
            ("api/events?limit=1%0A", "bad limit"),
            ("api/rounds/" + "1" * 4301, "bad round"),
            ("api/rounds/1%0A", "bad round"),
            ("a" * 256, "no such page"),
            ("a" * 5000 + ".js", "no such page"),
            ("x%00y", "no such page"),
            ("%F0%9F%92%A5", "no such page"),
        ]:
            target = url + path.replace("\u00b2", "%C2%B2")
            status, body, headers = get_json(target)
            assert 400 <= status < 500, (path[:40], status, body)
            assert headers["Content-Type"].startswith("application/json")
            assert needle in body["error"] and body["status"] == status
        for request, want in [
            (b"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
            (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"BREW /api HTTP/1.1\r\nHost: x\r\n\r\n", 405),  # http.server's 501
            (b"GET /api HTTP/9.9\r\nHost: x\r\n\r\n", 400),
            (b"garbage\r\n\r\n", 400),
            (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        ]:
            status, headers, raw = _raw_http(url, request)
            assert status == want, (request[:30], status, raw[:200])
            assert headers["Content-Type"].startswith("application/json"), raw[:200]
            assert json.loads(raw)["status"] == status
            if status == 405:
                assert headers["Allow"] == "GET, HEAD"
    finally:
        httpd.shutdown()
        httpd.server_close()
        db.close()
