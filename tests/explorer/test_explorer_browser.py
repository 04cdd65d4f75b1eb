"""The explorer page in a real headless Chromium: on-chain numbers, the verify box, live updates."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from explorer_scenario import Scenario

from chain.client import CoordinatorClient
from chain.profile import DEVNET
from node.explorer.api import Api
from node.explorer.server import ExplorerHandle, start_explorer


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh laptop-size page; fails the test on any console error or CSP violation."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    # A 4xx from the API shows up twice: as a response (checked below) and as a console line.
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    pg.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Anything not served by the explorer itself is an external request: record it.
    pg.on(
        "request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:")) else errors.append(r.url)
    )
    yield pg
    ctx.close()
    expected = "/api/rounds/42"  # the one 404 a test asks for on purpose
    assert [e for e in errors if not e.endswith(expected)] == [], errors


def short(addr: str) -> str:
    return addr[:6] + "…" + addr[-4:]


def test_overview_shows_the_onchain_numbers(
    page: Any, explorer: ExplorerHandle, federation: Scenario, artifacts_dir: Path
) -> None:
    page.goto(explorer.url)
    page.wait_for_selector("[data-testid=chart-fairness] svg")
    for text in (page.inner_text("header"), page.inner_text("main")):
        assert "null" not in text and "undefined" not in text and "NaN" not in text
    assert page.inner_text("[data-testid=card-members] .value") == "3"
    assert page.inner_text("[data-testid=card-rounds] .value") == "3"
    assert "2 finalized · 1 failed" in page.inner_text("[data-testid=card-rounds]")
    supply = CoordinatorClient(federation.rpc_url, federation.coordinator, None, DEVNET)
    paid = sum(a for r in federation.rounds for _, a, _ in r.rewards)
    assert sum(supply.token_balance(w.address) for w in federation.members) == paid
    assert page.inner_text("[data-testid=card-supply] .value") == f"{paid // 10**18} MFR"
    global_sha = federation.round(3).attempts[-1].sha256
    assert page.get_attribute("[data-testid=card-global] .hash", "data-full") == global_sha
    # every member with its PeerID (full values behind the shortened text + copy button)
    full = page.eval_on_selector_all("[data-full]", "els => els.map(e => e.dataset.full)")
    for w in federation.members:
        assert w.address in full and federation.peer_ids[w.address] in full
    assert short(federation.members[0].address) in page.inner_text("main")
    # the charts plot one point per institution and round with metrics
    assert page.locator("[data-testid=chart-members] circle").count() == 3 * 2
    assert page.locator("[data-testid=chart-fairness] circle").count() == 3 * 2
    page.screenshot(path=str(artifacts_dir / "explorer-overview.png"), full_page=True)
    assert (artifacts_dir / "explorer-overview.png").stat().st_size > 20_000


def test_round_page_shows_commits_attempts_votes_and_rewards(
    page: Any, explorer: ExplorerHandle, federation: Scenario, artifacts_dir: Path
) -> None:
    rec = federation.round(3)
    page.goto(explorer.url + "#/round/3")
    page.wait_for_selector("[data-testid=attempt]")
    full = page.eval_on_selector_all("[data-full]", "els => els.map(e => e.dataset.full)")
    for c in rec.commits:
        assert c.sha256 in full and c.cid in full and c.tx in full
    samples = page.eval_on_selector_all("[data-testid=commit-samples]", "els => els.map(e => e.textContent)")
    assert samples == [f"{c.num_samples:,}" for c in rec.commits]
    attempts = page.locator("[data-testid=attempt]")
    assert attempts.count() == 2
    assert "rejected" in attempts.nth(0).inner_text() and "accepted" in attempts.nth(1).inner_text()
    assert "0 approve · 2 reject" in attempts.nth(0).inner_text()
    assert "2 approve · 0 reject" in attempts.nth(1).inner_text()
    total = sum(a for _, a, _ in rec.rewards) // 10**18
    assert page.inner_text("[data-testid=round-rewards-total]") == f"{total} MFR"
    page.screenshot(path=str(artifacts_dir / "explorer-round.png"), full_page=True)

    page.goto(explorer.url + "#/round/2")
    page.wait_for_selector("text=aggregator timeout")
    assert "nothing paid: the round failed" in page.inner_text("main")
    page.goto(explorer.url + "#/round/42")
    page.wait_for_selector("[data-testid=error]")
    assert "round 42 is not on-chain" in page.inner_text("[data-testid=error]")


def test_member_page_shows_history(page: Any, explorer: ExplorerHandle, federation: Scenario) -> None:
    w = federation.members[1]
    page.goto(explorer.url + f"#/member/{w.address}")
    page.wait_for_selector("[data-testid=card-earned]")
    balance = CoordinatorClient(federation.rpc_url, federation.coordinator, None, DEVNET).token_balance(
        w.address
    )
    assert page.inner_text("[data-testid=card-earned] .value") == f"{balance // 10**18} MFR"
    assert page.inner_text("[data-testid=card-commits] .value") == "3"
    assert federation.peer_ids[w.address] in page.inner_text("main")


def verdict(page: Any) -> tuple[str, str]:
    page.wait_for_selector("[data-verdict=match], [data-verdict=nomatch]")
    box = page.locator("[data-verdict]")
    return str(box.get_attribute("data-verdict")), box.inner_text()


def test_verify_box_recognises_a_committed_file_and_rejects_another(
    page: Any, explorer: ExplorerHandle, federation: Scenario
) -> None:
    page.goto(explorer.url + "#/verify")
    commit = federation.round(2).commits[2]
    page.set_input_files("[data-testid=verify-file]", str(commit.path))
    kind, text = verdict(page)
    assert kind == "match", text
    assert "round 2" in text and short(commit.member) in text and "update" in text
    assert page.inner_text("[data-testid=verify-sha]") == commit.sha256

    page.set_input_files("[data-testid=verify-file]", str(federation.outsider_file))
    outsider_sha = hashlib.sha256(federation.outsider_file.read_bytes()).hexdigest()
    page.locator("[data-testid=verify-sha]", has_text=outsider_sha).wait_for()
    kind, text = verdict(page)
    assert kind == "nomatch" and "No commitment" in text

    agg = federation.round(1).attempts[0]
    assert agg.path is not None
    page.set_input_files("[data-testid=verify-file]", str(agg.path))
    page.wait_for_selector("[data-testid=verify-match]")
    kind, text = verdict(page)
    assert kind == "match" and "aggregate" in text and "accepted" in text
    assert "the global adapter from round 1 on" in text


def test_pure_js_sha256_matches_hashlib(page: Any, explorer: ExplorerHandle) -> None:
    """The fallback used where crypto.subtle is missing (plain http on a non-local host)."""
    page.goto(explorer.url + "#/verify")
    page.wait_for_selector("[data-testid=verify-file]")  # app.js ran, so sha256.js (loaded first) did
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 1000, 200_003):
        data = bytes((i * 31 + 7) % 256 for i in range(n))
        got = page.evaluate(
            "([n]) => { const b = new Uint8Array(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) % 256;"
            " return window.medfedSha256.sha256PureHex(b); }",
            [n],
        )
        assert got == hashlib.sha256(data).hexdigest(), n
    forced = page.evaluate(
        "async () => (await window.medfedSha256.sha256File(new TextEncoder().encode('abc').buffer, true))"
    )
    assert forced == {"hex": hashlib.sha256(b"abc").hexdigest(), "method": "pure-js"}


def test_phone_layout_has_no_horizontal_scroll(
    browser: Any, explorer: ExplorerHandle, artifacts_dir: Path
) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    pg = ctx.new_page()
    for route in ("", "#/round/3", "#/metrics"):
        pg.goto(explorer.url + route)
        pg.wait_for_selector("main h1")
        pg.wait_for_load_state("networkidle")
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), route
    pg.goto(explorer.url)
    pg.wait_for_selector("[data-testid=chart-fairness] svg")
    pg.screenshot(path=str(artifacts_dir / "explorer-phone.png"))
    ctx.close()


def test_page_follows_new_blocks_without_reload(page: Any, fresh_devnet: Scenario, tmp_path: Path) -> None:
    sc = fresh_devnet
    with start_explorer(sc.rpc_url, sc.coordinator, tmp_path / "live.sqlite", port=0, poll_s=0.2) as ex:
        page.goto(ex.url)
        page.wait_for_selector("[data-testid=card-rounds] .value >> text=1")
        page.evaluate("window.__marker = 'same page'")
        client = CoordinatorClient(sc.rpc_url, sc.coordinator, sc.admin, DEVNET)
        client.open_round()
        member = client.with_wallet(sc.members[0])
        member.commit_update(2, hashlib.sha256(b"live").digest(), "bafkreilive", 77)
        page.wait_for_selector("[data-testid=card-rounds] .value >> text=2", timeout=15_000)
        assert page.evaluate("window.__marker") == "same page"
        assert "open · commit" in page.inner_text("main")  # the live round's phase, from roundInfo()
        head = client.block_number()
        page.wait_for_selector(f"[data-testid=last-block] >> text=block {head}")


def test_display_names_show_beside_addresses_and_hostile_ones_stay_text(
    page: Any, fresh_devnet: Scenario, tmp_path: Path
) -> None:
    sc = fresh_devnet
    client = CoordinatorClient(sc.rpc_url, sc.coordinator, sc.admin, DEVNET)
    m0, m1 = sc.members[0], sc.members[1]
    client.with_wallet(m0).publish_peer(sc.peer_ids[m0.address], ["/ip4/127.0.0.1/tcp/40100"], "Hôpital Nord")
    xss = '<img src=x onerror="window.__pwned=1">'
    client.with_wallet(m1).publish_peer(sc.peer_ids[m1.address], ["/ip4/127.0.0.1/tcp/40101"], xss)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with start_explorer(sc.rpc_url, sc.coordinator, tmp_path / "names.sqlite", port=0, poll_s=0.2) as ex:
        ex.indexer.sync_once()
        page.goto(ex.url + "#/members")
        page.wait_for_selector("[data-testid=inst-name] >> text=Hôpital Nord")
        names = page.eval_on_selector_all("[data-testid=inst-name]", "els => els.map(e => e.textContent)")
        assert "Hôpital Nord" in names and xss in names  # the hostile name is shown as text
        assert page.query_selector("main img") is None and page.evaluate("window.__pwned") is None
        page.goto(ex.url + "#/member/" + m0.address)
        page.wait_for_selector("[data-testid=member-name] >> text=Hôpital Nord")
        page.goto(ex.url + "#/round/1")
        page.wait_for_selector("[data-testid=figure]")
        assert page.get_attribute("[data-testid=figure]", "data-kind") in ("accuracy", "mc", "sft")
    assert dialogs == []


def test_governance_page_shows_proposals_votes_and_outcomes(
    page: Any, fresh_devnet: Scenario, tmp_path: Path
) -> None:
    """issue 21: /api/proposals and the Governance page: an executed parameter change, a
    rejected admission and an open one, each with its ballots."""
    sc = fresh_devnet
    c = [CoordinatorClient(sc.rpc_url, sc.coordinator, w, DEVNET) for w in sc.members]
    outsider = "0x" + "ab" * 20
    c[0].propose_param("verifier_reward", 7)  # 1: passes on the second yes, applied at once
    c[1].vote_proposal(1, True)
    c[0].propose_add_member(outsider)  # 2: rejected by the two others
    c[1].vote_proposal(2, False)
    c[2].vote_proposal(2, False)
    c[2].propose_add_member(outsider)  # 3: open
    assert c[0].params().verifier_reward == 7
    with start_explorer(sc.rpc_url, sc.coordinator, tmp_path / "gov.sqlite", port=0, poll_s=0.2) as ex:
        ex.indexer.sync_once()
        body = Api(ex.db).proposals()
        by_id = {p["id"]: p for p in body["proposals"]}
        assert [p["id"] for p in body["proposals"]] == [3, 2, 1]
        assert by_id[1]["status"] == "executed" and by_id[1]["param"] == "verifier_reward"
        assert by_id[1]["value"] == "7" and (by_id[1]["yes"], by_id[1]["required"]) == (2, 2)
        assert by_id[2]["status"] == "rejected" and by_id[2]["no"] == 2
        assert [v["support"] for v in by_id[2]["votes"]] == [True, False, False]
        assert by_id[3]["status"] == "open" and by_id[3]["target"].lower() == outsider
        assert body["deployer"] == sc.admin.address and body["successor"] is None
        page.goto(ex.url + "#/governance")
        page.wait_for_selector("[data-testid=proposal-id] >> text=#3")
        statuses = page.eval_on_selector_all(
            "[data-testid=proposal-status]", "els => els.map(e => e.textContent)"
        )
        assert statuses == ["open", "rejected", "executed"]
        assert "set verifier_reward = 7" in page.inner_text("main")
