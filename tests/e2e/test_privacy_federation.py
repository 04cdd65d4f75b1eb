"""End to end (issue 20): a live federation (separate `medfed-node start` processes, a real anvil
devnet, real libp2p hosts, the tiny model) where two sites train with DP-SGD and one without, as
the federation's policy allows. Three rounds; the DP sites' budgets last two:

- rounds 1 and 2: every site trains and commits; the DP sites report the epsilon they spent with
  their metrics, growing and within the budget; the non-DP site reports no privacy figure;
- round 3: the DP sites say once that their budget is spent and do not train; they serve the round
  (`serveRound`, issue 20): they vote, one of the three is drawn as aggregator, and they are paid as
  verifier/aggregator only, never as contributor; the round finalizes on the non-DP site's update
  alone; they evaluate and report, and their reported spend stays put;
- the explorer (indexing the same chain) shows each DP institution's budget and spend per round,
  and the DP sites as "serving only" in round 3;
- the spend is in each DP site's state store (what a restart reads back).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_kit import REWARDS, expected_round_rewards, history, log_text, run

from chain import types as ev
from localnet import federation as F
from node.explorer.api import Api
from node.explorer.db import Database
from node.explorer.indexer import Indexer
from node.metric_report import decode_report
from node.privacy import LEDGER_KEY
from node.state import StateStore

pytestmark = pytest.mark.slow

BUDGET = 4.0
DP_SECTION = f"""
[privacy]
mode = "dp-sgd"
target_epsilon = {BUDGET}
max_grad_norm = 1.0
rounds = 2
"""


def test_two_dp_sites_and_one_without_report_their_spend_and_stop_at_their_budget(tmp_path: Path) -> None:
    fed, done = run(
        tmp_path / "fed",
        3,
        3,
        {},
        restart_crashed=False,
        timeout_s=360,
        privacy={0: DP_SECTION, 1: DP_SECTION},
    )
    try:
        assert done == {1: "finalized", 2: "finalized", 3: "finalized"}
        h = history(fed)
        members = [a.lower() for a in fed.devnet.addresses]
        dp, plain = set(members[:2]), members[2]

        committed = {r: {c.member.lower() for c in h.of(ev.UpdateCommitted, r)} for r in (1, 2, 3)}
        assert committed[1] == committed[2] == set(members)
        assert committed[3] == {plain}  # the DP sites' budgets are spent after two rounds
        # issue 20: they serve round 3 instead: they vote, and are paid as verifier/aggregator only
        assert {e.member.lower() for e in h.of(ev.ServingOnly)} == dp
        assert {e.round for e in h.of(ev.ServingOnly)} == {3}
        final = h.final(3)
        sub = h.submission(3, final.attempt)
        assert [a.lower() for a in sub.included] == [plain] and list(sub.invalid) == []
        assert h.of(ev.UpdateExcluded, 3) == []  # a server has no update to leave out
        voters = {v.voter.lower() for v in h.of(ev.VoteCast, 3) if v.attempt == final.attempt}
        assert voters == set(members) - {sub.aggregator.lower()}
        paid: dict[str, dict[str, int]] = {m: {} for m in members}
        for e in h.of(ev.RewardPaid, 3):
            paid[e.to.lower()][e.role] = e.amount
        contributor, aggregator, verifier = REWARDS
        assert paid[plain]["contributor"] == contributor
        for m in members:
            role = "aggregator" if m == sub.aggregator.lower() else "verifier"
            assert paid[m][role] == (aggregator if role == "aggregator" else verifier), (m, paid)
            if m in dp:
                assert set(paid[m]) == {role}, paid  # never as contributor
        client = fed.client()
        owed = expected_round_rewards(h)
        for m, a in zip(members, fed.devnet.addresses, strict=True):
            assert owed.get((3, m), 0) == sum(paid[m].values())  # the rules' settlement, as paid
            assert client.token_balance(a) == sum(v for (_, x), v in owed.items() if x == m)

        spend: dict[str, dict[int, float]] = {m: {} for m in members}
        for e in h.of(ev.MetricsReported):
            what = decode_report(bytes(e.eval_set_hash), e.accuracy_ppm)
            p = what["privacy"]
            if e.member.lower() == plain:
                assert p is None
                continue
            assert isinstance(p, dict) and p["budget"] == BUDGET
            spend[e.member.lower()][e.round] = p["epsilon"]
        for m in dp:
            s = spend[m]
            assert set(s) == {1, 2, 3}, s  # they still evaluate and report after their budget is spent
            assert 0 < s[1] < s[2] <= BUDGET, s
            assert s[3] == s[2], s  # no training in round 3: no more spend
        for i in (0, 1):
            text = log_text(fed, i)
            assert text.count("privacy budget spent") == 1, text[-2000:]
            assert "spent" in text and "serving as verifier/aggregator only" in text
            assert "DP-SGD: budget epsilon 4" in text
            store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, fed.devnet.addresses[i])
            try:
                assert [r for r, *_ in json.loads(store.get_meta(LEDGER_KEY) or "[]")] == [1, 2]
            finally:
                store.close()

        db = Database(tmp_path / "explorer.sqlite")
        try:
            Indexer.connect(fed.devnet.rpc_url, fed.devnet.coordinator, db).sync_once()
            api = Api(db)
            m = api.metrics()
            assert {a.lower() for a in m["privacy_members"]} == dp
            assert set(m["privacy_budgets"].values()) == {BUDGET}
            by_round = {
                x["round"]: {a.lower(): v for a, v in x["epsilon"].items()} for x in m["privacy_rounds"]
            }
            for member in dp:
                for r, eps in spend[member].items():
                    assert by_round[r][member] == eps
            serving = api.round_detail(3)["serving"]
            assert {x["member"].lower() for x in serving} == dp
            assert api.round_detail(2)["serving"] == []
            page = api.member_detail(fed.devnet.addresses[0].lower())
            assert all(x["metric"]["privacy"] for x in page["metrics"])
        finally:
            db.close()
    finally:
        F.down(fed.dir)
