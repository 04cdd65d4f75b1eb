"""End to end on the REAL Cypherium node (../shared/cypherium, official genesis rules: no REVERT,
no SHL): three separate `medfed-node start` processes on the tiny model, two rounds, and nothing
else sending transactions. One member dies after training in round 1 and never commits, so the
commit phase of both rounds is closed by its DEADLINE, not by the last commit: the chain makes
blocks only while a transaction is pending, so the election must be sent by a node on the wall
clock into a chain whose latest timestamp stands still (the stall of issue 10). Both rounds must
finalize, rewards must be exactly what the rules pay (events and token balances), and the explorer
and `medfed-node status` must read the chain's millisecond time unit from the chain itself.

The other live member is hostile (issue 12, the attacks of tests/e2e/test_dishonest_member.py on
the real node): it never trains, commits a copy of the honest member's update hash as its own
(B6, front-running; the chain has no duplicate-hash rule), and as verifier always rejects (B3).
With two committers its lone rejection can only dispute: the attempt then goes to the attacker,
whose honest aggregate is the same hash, which proves it wrong (it forfeits the round, and the
first author is paid as aggregator). Whichever member the seed elects, the copy is excluded
(named invalid: it names another author) and its committer earns nothing that round, even as
aggregator; the honest member loses nothing, and round 2 builds on round 1's global adapter.

Where network namespaces are available (root, `ip netns`, iptables: issue 19) every site runs in
a namespace of its own, the last behind the hospital firewall, and reaches the node (which listens
on 127.0.0.1 only) at the bridge's address through the launcher's tagged DNAT rule; `down` removes
namespaces and rule. Elsewhere the same federation runs on loopback (the reason is printed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from e2e_kit import (
    REWARDS,
    expected_rewards,
    expected_round_rewards,
    history,
    log_text,
    netns_why_not,
    paid,
    run,
)
from web3 import Web3

from chain import types as ev
from localnet import federation as F
from localnet import netns
from node.chainkind import resolve_profile
from node.cli import main as node_main
from node.explorer.api import Api
from node.explorer.db import Database
from node.explorer.indexer import Indexer

pytestmark = pytest.mark.slow

# the launcher's Cypherium sizing with a shorter commit phase: the tiny model trains in seconds,
# and a member that misses it only changes who is paid (asserted from the events), not the outcome
SIZING = dataclasses.replace(F.sizing_for("tiny", "cypherium"), commit_s=30)
C, A, V = REWARDS


def test_two_rounds_on_a_quiet_cypherium_chain_under_official_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "fed"
    faults = {
        1: "front-run,always-reject",  # hostile: copies node 0's hash, vetoes whatever it verifies
        2: "crash-after-train@1",  # node 2 never commits: the deadline closes each commit phase
    }
    why_not = netns_why_not()
    if why_not is not None:
        print(f"sites on loopback, not in network namespaces: {why_not}")
    namespaced = why_not is None
    fed, done = run(
        d,
        3,
        2,
        faults,
        False,
        600,
        sizing=SIZING,
        chain="cypherium",
        genesis="official-rules",
        netns=namespaced,
        firewalled=1 if namespaced else 0,
    )
    tag = netns.tag_for(d)
    try:
        assert fed.devnet.kind == "cypherium" and fed.devnet.time_unit_ms
        if namespaced:
            # the node listens on loopback only; the sites, each in its namespace, were given the
            # bridge's address, which our tagged DNAT rule forwards (their commits below prove it)
            net = fed.netns
            assert net is not None and net.firewalled == (2,)
            port = fed.devnet.rpc_url.rsplit(":", 1)[1]
            assert fed.devnet.rpc_url == f"http://127.0.0.1:{port}"
            assert fed.devnet.site_rpc_url == f"http://{net.host_ip}:{port}"
            for i, path in enumerate(fed.config_paths):
                text = path.read_text()
                assert f'rpc_url = "{fed.devnet.site_rpc_url}"' in text and net.listen(i) in text
            assert any(f"127.0.0.1:{port}" in line for _table, line in netns.tagged_rules(tag))
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

        # the hostile member (issue 12): its copy is excluded and unpaid, its veto costs it the round
        honest, copier = members[0], members[1]
        per_round = expected_round_rewards(h)
        for r in (1, 2):
            commits = {c.member.lower(): bytes(c.sha256) for c in h.of(ev.UpdateCommitted, r)}
            assert commits[copier] == commits[honest], "B6: the attacker did not commit a copy"
            final = h.final(r)
            sub = h.submission(r, final.attempt)
            agg = sub.aggregator.lower()
            assert [a.lower() for a in sub.included] == [honest], "B6: the copy was aggregated"
            excluded = {(e.member.lower(), e.aggregator.lower()) for e in h.of(ev.UpdateExcluded, r)}
            assert excluded == {(copier, agg)}
            votes = {(v.attempt, v.voter.lower()): v.approve for v in h.of(ev.VoteCast, r)}
            first = h.submission(r, 0)
            if first.aggregator.lower() == honest:
                # B3 with two committers: the lone veto disputes; the attempt goes to the vetoer,
                # whose aggregate is the same hash: the vetoer forfeits, the first author is paid
                failed = [(f.attempt, f.reason) for f in h.of(ev.AttemptFailed, r)]
                assert failed == [(0, "disputed")] and final.attempt == 1 and agg == copier
                assert bytes(sub.sha256) == bytes(first.sha256)
                assert votes == {(0, copier): False, (1, honest): True}
                want = {honest: C + A + V}
            else:
                assert agg == copier and final.attempt == 0 and not h.of(ev.AttemptFailed, r)
                assert votes == {(0, honest): True}
                # its own node names the copy invalid (it names another author): the copier
                # forfeits the round, aggregator reward included (issue 12: an attacker never gains)
                assert [a.lower() for a in sub.invalid] == [copier]
                want = {honest: C + V}
            assert paid(h, r) == want == {a: x for (rr, a), x in per_round.items() if rr == r}
        assert "TEST FAULT front-run: committed a copy" in log_text(fed, 1)
        victim = log_text(fed, 0)
        assert "REFUSED" not in victim and victim.count("committed update") == 2
        # the federation goes on: round 2 started from round 1's global adapter
        (opened2,) = h.of(ev.RoundOpened, 2)
        assert bytes(opened2.base_sha256) == bytes(h.final(1).global_sha256)

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
    assert netns.tagged_rules(tag) == []  # the forward goes with the namespaces
