"""End to end on the REAL Cypherium node (../shared/cypherium, official genesis rules: no REVERT,
no SHL): three separate `medfed-node start` processes on the tiny model, two rounds, and nothing
else sending transactions. One member dies after training in round 1 and never commits, so the
commit phase of both rounds is closed by its DEADLINE, not by the last commit: the chain makes
blocks only while a transaction is pending, so the election must be sent by a node on the wall
clock into a chain whose latest timestamp stands still (the stall of issue 10). Both rounds must
finalize, rewards must be exactly what the rules pay (events and token balances), and the explorer
and `medfed-node status` must read the chain's millisecond time unit from the chain itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from e2e_kit import expected_rewards, history, paid, run
from web3 import Web3

from chain import types as ev
from localnet import federation as F
from node.chainkind import resolve_profile
from node.cli import main as node_main
from node.explorer.api import Api
from node.explorer.db import Database
from node.explorer.indexer import Indexer

pytestmark = pytest.mark.slow

# the launcher's Cypherium sizing with a shorter commit phase: the tiny model trains in seconds,
# and a member that misses it only changes who is paid (asserted from the events), not the outcome
SIZING = dataclasses.replace(F.sizing_for("tiny", "cypherium"), commit_s=30)


def test_two_rounds_on_a_quiet_cypherium_chain_under_official_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "fed"
    faults = {2: "crash-after-train@1"}  # node 2 never commits: the deadline closes each commit phase
    fed, done = run(d, 3, 2, faults, False, 600, sizing=SIZING, chain="cypherium", genesis="official-rules")
    try:
        assert fed.devnet.kind == "cypherium" and fed.devnet.time_unit_ms
        assert done == {1: "finalized", 2: "finalized"}
        assert fed.exited == {2: 17}
        h = history(fed)
        client = fed.client()
        members = [a.lower() for a in fed.devnet.addresses]

        # each election was a separate, deadline-driven transaction sent by a node on the wall
        # clock (not the receipt of a commit), mined at or after the commit deadline
        for r in (1, 2):
            (opened,) = h.of(ev.RoundOpened, r)
            commits = h.of(ev.UpdateCommitted, r)
            elected = h.of(ev.AggregatorElected, r)
            assert len(commits) == 2 and members[2] not in {c.member.lower() for c in commits}
            assert elected and elected[0].tx_hash not in {c.tx_hash for c in commits}
            sender = client.w3.eth.get_transaction(elected[0].tx_hash)["from"].lower()
            assert sender in members[:2], "the election came from outside the federation"
            stamp = int(client.w3.eth.get_block(elected[0].block_number)["timestamp"])
            assert stamp >= opened.commit_deadline

        # rewards: RewardPaid == the rules applied to votes and aggregates == token balances
        expected = expected_rewards(h)
        assert paid(h) == expected and expected
        for a in members:
            assert client.token_balance(a) == expected.get(a, 0)
        for r in (1, 2):
            assert paid(h, r), f"round {r} paid nothing"
        summary = F.write_summary(fed)
        assert [r["round"] for r in summary["rounds"]] == [1, 2]
        assert all(r["global_sha256"] and r["rewards"] for r in summary["rounds"])
        live = {site.name for i, site in enumerate(fed.sites) if i != 2}
        assert all(set(r["accuracy"]) == live for r in summary["rounds"]), summary  # metrics on-chain

        # no outside traffic: every transaction since the deployment came from the federation
        # (admin + members), and the chain made no block without one (it stayed quiet)
        w3 = Web3(Web3.HTTPProvider(fed.devnet.rpc_url))
        ours = {fed.devnet.admin.lower(), *members}
        head = w3.eth.block_number
        for n in range(fed.devnet.deploy_block, head + 1):
            block = w3.eth.get_block(n, full_transactions=True)
            assert block["transactions"], f"block {n} is empty: the chain was not quiet"
            senders = {tx["from"].lower() for tx in block["transactions"]}  # type: ignore[index]
            assert senders <= ours, f"block {n}: transactions from outside the federation {senders - ours}"

        # the chain's own time unit, read from the chain: explorer and status
        assert resolve_profile(fed.devnet.rpc_url).name == "cypherium"
        wrong = resolve_profile(fed.devnet.rpc_url, "devnet")  # a forgotten profile changes nothing
        assert wrong.time_unit_ms is True and wrong.blocks_on_demand is True
        db = Database(tmp_path / "explorer.sqlite")
        try:
            ix = Indexer.connect(fed.devnet.rpc_url, fed.devnet.coordinator, db)  # no profile given
            ix.sync_once()
            detail = Api(db).round_detail(1)
            opened_ms = int(w3.eth.get_block(detail["opened"]["block"])["timestamp"])
            assert detail["opened"]["time_ms"] == opened_ms
            assert detail["commit_deadline_ms"] == opened_ms + SIZING.commit_s * 1000
        finally:
            db.close()
        assert node_main(["status", "--config", str(fed.config_paths[0])]) == 0
        out = capsys.readouterr().out
        assert "cypherium chain, block timestamps in ms" in out
        assert any(isinstance(e, ev.RoundFinalized) and e.round == 2 for e in h.events)
    finally:
        F.down(d)
