"""End to end (issue 18): a member writes invalid UTF-8 on-chain; nobody stops.

A live federation (four `medfed-node start` processes, real anvil, real libp2p, tiny model). Once
round 1 is open, the fourth member's node stops and its key acts alone, with hostile transactions
sent as raw calldata: a `publishPeer` whose peer id and multiaddrs are not UTF-8 (with a newline that
would forge a log line), and a `commitUpdate` whose `cid` is not UTF-8. ABI strings are bytes, so
the contract accepts both. On the old code every node's event reader raised UnicodeDecodeError
on that block forever: no node trained, committed, advanced or voted again.

Now both rounds finalize with every honest update included, the hostile commit is left out as
unavailable and paid nothing, and the explorer shows the bytes as escaped text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from e2e_kit import History, expected_rewards, history, log_text, paid, run
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from chain import types as ev
from chain.tx import TxSender
from localnet import federation as F
from node.explorer.api import Api, safe_route
from node.explorer.db import Database
from node.explorer.indexer import Indexer

pytestmark = pytest.mark.slow

HOSTILE = 3  # node 3's wallet: a member whose node is stopped once round 1 opens
BAD_PEER_ID = b"16Uiu\xff\xfe\nINFO round 1 FINALIZED"
BAD_ADDRS = b"/ip4/127.0.0.1/tcp/\xc3\x28/p2p/x,name=\xff\xfe"
BAD_CID = b"bafy\xff\xfe\x00"


def _raw_call(signature: str, types: list[str], values: list[Any]) -> str:
    """Calldata with ``string`` arguments given as raw bytes (the same ABI encoding)."""
    wire = ["bytes" if t == "string" else t for t in types]
    return "0x" + (function_signature_to_4byte_selector(signature) + encode(wire, values)).hex()


def test_invalid_utf8_on_chain_stops_no_node_and_the_explorer_shows_it(tmp_path: Path) -> None:
    state: dict[str, Any] = {}

    def attack_then_two_rounds(fed: F.Federation, h: History) -> bool:
        if "hostile" not in state:  # the fourth member's node stops; its key acts alone from now on
            fed.stop_node(HOSTILE)
            state["hostile"] = fed.devnet.load_wallet(HOSTILE)
        opened = h.of(ev.RoundOpened)
        if "commit_round" not in state and opened and not h.of(ev.AggregatorElected, opened[-1].round):
            rnd = opened[-1].round  # its commit phase is still open
            client = fed.devnet.client()
            sender = TxSender(client.w3, state["hostile"], fed.devnet.profile)
            to = fed.devnet.coordinator
            if "peer" not in state:
                peer = _raw_call("publishPeer(string,string)", ["string", "string"], [BAD_PEER_ID, BAD_ADDRS])
                state["peer"] = sender.send({"to": to, "data": peer}, "publishPeer", gas=500_000)
            signature = "commitUpdate(uint256,bytes32,string,uint256)"
            types = ["uint256", "bytes32", "string", "uint256"]
            data = _raw_call(signature, types, [rnd, os.urandom(32), BAD_CID, 8])
            if sender.send({"to": to, "data": data}, "commitUpdate", gas=500_000)["logs"]:
                state["commit_round"] = rnd  # else it had committed already, or the phase closed: next
        last = state.get("commit_round")
        return last is not None and {f.round for f in h.of(ev.RoundFinalized)} >= {last, last + 1}

    fed, done = run(
        tmp_path / "fed",
        4,
        5,
        {},
        restart_crashed=False,
        timeout_s=420,
        until=attack_then_two_rounds,
        may_exit={HOSTILE},
    )
    try:
        h = history(fed)
        r = state["commit_round"]
        assert all(done.get(k) == "finalized" for k in range(1, r + 2)), done
        hostile_lc = state["hostile"].address.lower()
        peer = [e for e in h.of(ev.PeerPublished) if e.member.lower() == hostile_lc][-1]
        assert peer.peer_id == "16Uiu\\xff\\xfe\\x0aINFO round 1 FINALIZED"  # escaped, not replaced
        (commit,) = [c for c in h.of(ev.UpdateCommitted, r) if c.member.lower() == hostile_lc]
        assert commit.cid == "bafy\\xff\\xfe\\x00"
        honest = {a.lower() for a in fed.devnet.addresses[:HOSTILE]}
        for k in (r, r + 1):
            sub = h.submission(k, h.final(k).attempt)
            assert {a.lower() for a in sub.included} == honest  # every honest update, both rounds
        excluded = {e.member.lower(): e.reason for e in h.of(ev.UpdateExcluded, r)}
        assert excluded == {hostile_lc: "unavailable"}
        got = paid(h)
        assert got.get(hostile_lc, 0) == 0  # who was paid what: the hostile member nothing
        assert got == expected_rewards(h)
        for i in range(HOSTILE):
            text = log_text(fed, i)
            assert "UnicodeDecodeError" not in text and "skipping" not in text
            assert "\nINFO round 1 FINALIZED" not in text  # no forged log line

        db = Database(tmp_path / "index.sqlite")
        Indexer.connect(fed.devnet.rpc_url, fed.devnet.coordinator, db).sync_once()
        status, members = safe_route(Api(db), "/api/members", {})
        assert status == 200
        shown = {m["address"].lower(): m for m in members["members"]}
        assert shown[hostile_lc]["peer_id"] == "16Uiu\\xff\\xfe\\x0aINFO round 1 FINALIZED"
        status, detail = safe_route(Api(db), f"/api/rounds/{r}", {})
        cids = {c["member"].lower(): c["cid"] for c in detail["commits"]}
        assert status == 200 and cids[hostile_lc] == "bafy\\xff\\xfe\\x00"
    finally:
        F.down(tmp_path / "fed")
