"""Institution display names: published with the peer record (no contract change), shown by the
explorer beside the address; hostile names written straight to the contract never reach the page
as markup or control characters, and old-style records (no name) still parse."""

from __future__ import annotations

from pathlib import Path

import pytest
from explorer_scenario import Scenario

from chain import peer_record
from chain.client import CoordinatorClient
from chain.profile import DEVNET
from node.explorer.api import Api
from node.explorer.db import Database
from node.explorer.indexer import Indexer


def test_peer_record_round_trip_and_hostile_names() -> None:
    raw = peer_record.encode(["/ip4/1.2.3.4/tcp/4001/p2p/X"], "St. Mary's, Zürich 病院")
    assert raw.startswith("/ip4/1.2.3.4/tcp/4001/p2p/X,name=") and raw.count(",") == 1
    assert peer_record.decode(raw) == (("/ip4/1.2.3.4/tcp/4001/p2p/X",), "St. Mary's, Zürich 病院")
    assert peer_record.decode("/ip4/1.2.3.4/tcp/1,/ip4/5.6.7.8/tcp/2") == (
        ("/ip4/1.2.3.4/tcp/1", "/ip4/5.6.7.8/tcp/2"),
        "",
    )
    for hostile in ("a%0Ab", "x" * 65, "%E2%80%AEevil", "%FF%FE", " padded"):
        assert peer_record.decode("/ip4/1.2.3.4/tcp/1,name=" + hostile)[1] == ""
    assert peer_record.decode("garbage,future=1,/ip4/1.2.3.4/tcp/1,name=A,name=B") == (
        ("/ip4/1.2.3.4/tcp/1",),
        "A",
    )
    for bad in ("x" * 65, "tab\there", " lead"):
        with pytest.raises(ValueError):
            peer_record.encode([], bad)


def test_explorer_shows_published_names_and_drops_hostile_ones(
    fresh_devnet: Scenario, tmp_path: Path
) -> None:
    sc = fresh_devnet
    m0, m1, m2 = sc.members
    c0 = CoordinatorClient(sc.rpc_url, sc.coordinator, m0, DEVNET)
    c0.publish_peer(sc.peer_ids[m0.address], ["/ip4/127.0.0.1/tcp/40100"], "Hôpital <b>Nord</b>")
    xss = '<img src=x onerror="alert(1)">'
    c1 = c0.with_wallet(m1)
    c1.publish_peer(sc.peer_ids[m1.address], ["/ip4/127.0.0.1/tcp/40101"], xss)
    # a hostile member bypasses our encoder: control characters and a bidi override, raw on-chain
    c2 = c0.with_wallet(m2)
    c2._transact("publishPeer", sc.peer_ids[m2.address], "/ip4/127.0.0.1/tcp/40102,name=Evil%0A%E2%80%AEcorp")

    rec = c0.member_peer(m0.address)
    assert rec is not None and rec.multiaddrs == ("/ip4/127.0.0.1/tcp/40100",)
    assert rec.display_name == "Hôpital <b>Nord</b>"
    db = Database(tmp_path / "index.sqlite")
    Indexer.connect(sc.rpc_url, sc.coordinator, db).sync_once()
    api = Api(db)
    by = {m["address"]: m for m in api.members()["members"]}
    assert by[m0.address]["name"] == "Hôpital <b>Nord</b>"
    assert by[m0.address]["multiaddrs"] == ["/ip4/127.0.0.1/tcp/40100"]
    assert by[m1.address]["name"] == xss  # shown as text: app.js only makes text nodes of names
    assert by[m2.address]["name"] == "" and by[m2.address]["multiaddrs"] == ["/ip4/127.0.0.1/tcp/40102"]
    assert api.member_detail(m0.address.lower())["name"] == "Hôpital <b>Nord</b>"
    assert api.metrics()["names"] == {m0.address: "Hôpital <b>Nord</b>", m1.address: xss}
    db.close()
