"""Pure pieces of the node and the launcher, on plain values: data windows and shards, the site plan,
fault specs of the test behaviour, the transfer access policy, published addresses."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hostile_behaviour import Fault, from_faults, parse

from localnet.federation import plan_sites
from node.behaviour import HonestBehaviour
from node.config import TEMPLATE, load_config
from node.context import RoundMemo
from node.daemon import _may_serve, published_addrs
from node.data import SiteData, load_site_data
from training.data import Question

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _q(i: int) -> Question:
    return Question(f"x/{i}", "medqa-us", "en", f"q{i}", ("a", "b", "c", "d"), i % 4)


def test_round_window_rotates_through_the_training_data() -> None:
    site = SiteData("s", tuple(_q(i) for i in range(10)), (_q(100),))
    assert [q.id for q in site.round_window(1, 4)] == ["x/0", "x/1", "x/2", "x/3"]
    assert [q.id for q in site.round_window(2, 4)] == ["x/4", "x/5", "x/6", "x/7"]
    assert [q.id for q in site.round_window(3, 4)] == ["x/8", "x/9", "x/0", "x/1"]  # wraps around
    assert len(site.round_window(5, 0)) == 10 and len(site.round_window(1, 50)) == 10


def test_plan_sites_is_non_iid_and_shards_sources_beyond_three() -> None:
    three = plan_sites(3)
    assert [s.name for s in three] == ["medqa-mainland", "medqa-us", "medmcqa"]
    assert all("shard" not in s.train[0] for s in three)
    five = plan_sites(5)
    assert [s.name for s in five] == [
        "medqa-mainland-1",
        "medqa-us-1",
        "medmcqa",
        "medqa-mainland-2",
        "medqa-us-2",
    ]
    assert five[0].train[0]["shard"] == "1/2" and five[3].train[0]["shard"] == "2/2"
    assert five[0].eval[0]["shard"] == "1/2"


def test_shards_of_one_source_are_disjoint_and_cover_it(tmp_path: Path) -> None:
    ids = []
    for k in (1, 2):
        text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
        text = text.replace('split = "dev" }]', f'split = "dev", shard = "{k}/2" }}]')
        text = text.replace('split = "test" }]', f'split = "test", shard = "{k}/2" }}]')
        p = tmp_path / f"c{k}.toml"
        p.write_text(text)
        data = load_site_data(load_config(p))
        ids.append({q.id for q in data.train})
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) == 1272  # medqa-us dev


def test_fault_specs() -> None:
    assert parse("crash-after-commit@1,tamper-aggregate@1.1, serve-wrong-bytes") == (
        Fault("crash-after-commit", 1, None),
        Fault("tamper-aggregate", 1, 1),
        Fault("serve-wrong-bytes", None, None),
    )
    with pytest.raises(ValueError, match="unknown fault"):
        parse("explode")
    f = from_faults("tamper-aggregate@2.1")
    assert f.active("tamper-aggregate", 2, 1) and not f.active("tamper-aggregate", 2, 0)
    assert not f.active("tamper-aggregate", 1, 1) and not from_faults("").active("tamper-aggregate", 2, 1)
    blind = from_faults("blind-approve")  # every round and attempt
    assert blind.active("blind-approve", 1, 0) and blind.active("blind-approve", 5, 2)


def test_updates_are_served_only_to_members_once_the_commit_phase_is_over() -> None:
    now = 1000.0
    node: Any = SimpleNamespace(
        members=frozenset({"0xaa", "0xbb"}),
        served={"u1": ("update", 1), "u2": ("update", 2), "g": ("global", 1), "agg": ("aggregate", 2)},
        commit_deadlines={1: now - 1, 2: now + 30},
        commits_closed=set(),
        now=lambda: now,
        behaviour=HonestBehaviour(),
        elected={},
        memo=RoundMemo(1),
    )
    may = _may_serve(node)
    assert may("0xAA", "u1")  # round 1's commit deadline has passed
    assert set(node.memo.handed_at) == {(1, "0xaa", "u1")}  # issue 24: who fetched which update
    assert not may("0xaa", "u2")  # round 2 still open for commits: nobody may copy it yet
    assert may("0xbb", "g") and may("0xbb", "agg")
    assert not may("0xcc", "g")  # not a member
    node.commits_closed.add(2)  # every member committed: the chain closed round 2 before its deadline
    assert may("0xaa", "u2") and not may("0xcc", "u2")
    node.commit_deadlines = {}
    node.commits_closed = set()
    assert not may("0xaa", "u1")  # unknown deadline: refuse (math.inf)


def test_published_addresses_end_with_the_peer_id(tmp_path: Path) -> None:
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    p = tmp_path / "m.toml"
    p.write_text(text)
    cfg = load_config(p)
    listening = ["/ip4/127.0.0.1/tcp/4001/p2p/16UiuX"]
    assert published_addrs(cfg, listening, "16UiuX") == listening
    p.write_text(text.replace("announce = []", 'announce = ["/dns4/site.example/tcp/4001"]'))
    cfg = load_config(p)
    assert published_addrs(cfg, listening, "16UiuX") == ["/dns4/site.example/tcp/4001/p2p/16UiuX"]


def test_withhold_fault_refuses_everyone_before_the_submission_then_only_the_aggregator() -> None:
    now = 1000.0
    submitted: set[tuple[int, int]] = set()
    node: Any = SimpleNamespace(
        members=frozenset({"0xaa", "0xbb"}),
        served={"u1": ("update", 1), "g": ("global", 1)},
        commit_deadlines={1: now - 1},
        commits_closed=set(),
        now=lambda: now,
        behaviour=from_faults("withhold-from-aggregator"),
        elected={1: "0xaa"},
        memo=RoundMemo(1),
        store=SimpleNamespace(submission=lambda r, k: object() if (r, k) in submitted else None),
    )
    may = _may_serve(node)
    # elected, nothing submitted yet: a verifier holding a copy could pass it on to the aggregator
    assert not may("0xbb", "u1") and not may("0xaa", "u1") and may("0xbb", "g")
    submitted.add((1, 0))
    assert not may("0xAA", "u1") and may("0xbb", "u1") and may("0xaa", "g")
    node.elected = {}  # the election not seen: anyone may be the aggregator
    assert not may("0xbb", "u1") and may("0xbb", "g")


def test_decidable_early_follows_the_contract_rules() -> None:
    from node.round import decidable_early

    assert decidable_early(1, 0, 0)  # a lone committer
    assert not decidable_early(2, 0, 0) and decidable_early(2, 0, 1)  # 2: the one vote disputes
    assert not decidable_early(3, 0, 1)  # 3: one rejection alone decides nothing early
    assert decidable_early(3, 1, 1) and decidable_early(3, 0, 2) and decidable_early(3, 2, 0)
    assert not decidable_early(5, 1, 1) and decidable_early(5, 0, 2) and decidable_early(5, 3, 0)


def _closed_round_node(me: str, committers: list[str], aggregator: str | None = None) -> Any:
    """A node double in round 1's commit phase, which every member's commit closed early (the
    contract moved the commit deadline to the closing block's time, 1 s ago)."""
    from chain.types import Phase, RoundInfo

    now = 1000.0
    sent: list[tuple[str, int]] = []
    info = RoundInfo(1, Phase.COMMIT, 0, len(committers), 999, 0, 0, aggregator, 0, 0)
    client = SimpleNamespace(
        committers=lambda: committers,
        round_info=lambda: info,
        advance=lambda r: sent.append(("advance", r)) or SimpleNamespace(tx_hash="0x1"),
    )

    async def chain(fn: Any, *args: Any) -> Any:
        return fn(*args)

    members = frozenset(committers)
    return SimpleNamespace(
        me=me,
        members=members,
        rank=lambda: sorted(members).index(me),
        cfg=SimpleNamespace(rounds=SimpleNamespace(stagger_s=5.0), p2p=SimpleNamespace(ipfs_api="")),
        client=client,
        chain=chain,
        now=lambda: now,
        to_unix=float,
        store=SimpleNamespace(update=lambda r: None, add_timing=lambda *a: None),
        set_status=lambda **kv: None,
        memo=RoundMemo(1),
        info=info,
        sent=sent,
    )


def test_after_an_early_close_the_closer_and_the_predicted_aggregator_advance_at_once() -> None:
    """The election is drawn in a block after the last commit: the member whose commit closed the
    phase (and the one aggregatorOf predicts) send `advance` at once, the others keep their stagger,
    so a round takes about the slowest site's training time (issue 11)."""
    import trio

    from node import round as rounds

    members = ["0x01", "0x02", "0x03"]
    for me, aggregator, at_once in [
        ("0x03", None, True),  # rank 2, but its commit (the last) closed the phase
        ("0x02", None, False),  # rank 1, neither: waits 5 s
        ("0x02", "0x02", True),  # the predicted aggregator
    ]:
        node = _closed_round_node(me, members, aggregator)  # committed in this order
        trio.run(rounds.elect_and_aggregate, node, node.info)
        assert node.sent == ([("advance", 1)] if at_once else []), (me, aggregator)


def test_update_providers_announcers_first_then_owners_then_the_other_committers(tmp_path: Path) -> None:
    """Fetched updates are served on but not announced (n*(n-1) gossip messages a round), so a
    fetcher asks announcers (possibly hostile: the p2p layer penalises wrong bytes), then the
    owner, then the other committers, who hold it once they prefetched it."""
    from node.state import StateStore
    from node.transfer import providers_for

    store = StateStore(tmp_path, "0x" + "cc" * 20, "0x" + "00" * 20)
    peers = {"0x" + c * 20: f"Qm{c}" for c in ("11", "22", "33", "44")}
    for member, pid in peers.items():
        store.set_peer(member, pid, (f"/ip4/127.0.0.1/tcp/1/p2p/{pid}",))
    announcer = "Qm33"  # a committer that announced the file (e.g. a hostile offer)
    node: Any = SimpleNamespace(
        store=store, peer_id="Qm00", host=SimpleNamespace(providers_of=lambda sha: [announcer])
    )
    owner, others = "0x" + "11" * 20, ["0x" + "22" * 20, "0x" + "33" * 20, "0x" + "44" * 20]
    got = [a.rsplit("/", 1)[1] for a in providers_for(node, "ab" * 32, [owner], others)]
    assert got == ["Qm33", "Qm11", "Qm22", "Qm44"]
    assert [a.rsplit("/", 1)[1] for a in providers_for(node, "ab" * 32, [owner])] == ["Qm33", "Qm11"]
    store.close()


def test_a_member_back_late_asks_every_other_member_for_a_global() -> None:
    from node.transfer import global_holders

    node: Any = SimpleNamespace(members=frozenset({"0xcc", "0xaa", "0xbb"}), me="0xbb")
    assert global_holders(node) == ["0xaa", "0xcc"]  # it missed the announcement: not nobody
