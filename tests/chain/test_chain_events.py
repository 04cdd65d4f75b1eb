"""EventReader: typed events, paging that loses nothing, resuming from a stored block."""

from __future__ import annotations

from pathlib import Path

import pytest
from chain_testkit import CID, Fed, rpc, sha

from chain.events import BlockCursor, EventReader
from chain.types import ChainEvent, Deployed, MemberAdded, RoundOpened, UpdateCommitted


def run_some_rounds(fed: Fed) -> None:
    r = fed.open_and_commit([0, 1, 2])
    fed.close_commits()
    agg = fed.by_address(fed.view.aggregator_of(r))
    agg.submit_aggregate(r, sha("agg"), CID, [fed.addr(i) for i in range(3)])
    for c in fed.m[:3]:
        if c is not agg:
            c.vote(r, True)
    fed.admin.finalize(r)


def test_reads_typed_events_from_deployment(fed: Fed) -> None:
    run_some_rounds(fed)
    events = EventReader(fed.view).read(fed.base.deployment.deploy_block)
    names = [e.name for e in events]
    assert isinstance(events[0], Deployed) and events[0].token == fed.base.deployment.token
    assert names.count("MemberAdded") == 4 and names.count("UpdateCommitted") == 3
    assert names[-7:] == ["RoundFinalized"] + ["RewardPaid"] * 6
    commits = [e for e in events if isinstance(e, UpdateCommitted)]
    assert [c.member for c in commits] == [fed.addr(i) for i in range(3)]
    assert commits[0].sha256 == sha("r1-update-0") and commits[0].cid == CID
    keys = [(e.block_number, e.log_index) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("page_size", [1, 3, 7])
def test_paging_returns_the_same_events(fed: Fed, page_size: int) -> None:
    run_some_rounds(fed)
    start = fed.base.deployment.deploy_block
    whole = EventReader(fed.view, page_size=10_000).read(start)
    reader = EventReader(fed.view, page_size=page_size)
    paged = reader.read(start)
    assert paged == whole
    span = fed.view.block_number() - start + 1
    assert reader.pages_read == -(-span // page_size)


def test_follow_resumes_from_stored_block(fed: Fed, tmp_path: Path) -> None:
    cursor_file = tmp_path / "cursor.json"
    seen: list[ChainEvent] = []
    start = fed.base.deployment.deploy_block
    first = EventReader(fed.view, page_size=4).follow(BlockCursor(cursor_file, start), seen.append)
    assert first == len(seen) and any(isinstance(e, MemberAdded) for e in seen)
    fed.admin.open_round()
    # a new process: the cursor comes back from the file, so only the new event is delivered
    more: list[ChainEvent] = []
    second = EventReader(fed.view, page_size=4).follow(BlockCursor(cursor_file, start), more.append)
    assert second == 1 and isinstance(more[0], RoundOpened)
    assert EventReader(fed.view).follow(BlockCursor(cursor_file, start), more.append) == 0


def test_failing_handler_replays_its_page(fed: Fed, tmp_path: Path) -> None:
    cursor = BlockCursor(tmp_path / "c.json", fed.base.deployment.deploy_block)
    fed.admin.open_round()
    calls: list[str] = []

    def flaky(e: ChainEvent) -> None:
        calls.append(e.name)
        if e.name == "RoundOpened" and calls.count("RoundOpened") == 1:
            raise RuntimeError("crash mid-page")

    with pytest.raises(RuntimeError):
        EventReader(fed.view, page_size=1000).follow(cursor, flaky)
    EventReader(fed.view, page_size=1000).follow(BlockCursor(tmp_path / "c.json", 0), flaky)
    assert calls.count("RoundOpened") == 2


def test_any_in_says_whether_the_coordinator_logged_in_a_range(fed: Fed) -> None:
    """The node's chain watcher (node.daemon._watch_chain) wakes only for blocks with coordinator
    events: empty blocks (anvil's timer) say no, a block with an opening says yes."""
    reader = EventReader(fed.view, page_size=50)
    before = fed.view.block_number()
    rpc(fed.url, "evm_mine", [])
    rpc(fed.url, "evm_mine", [])
    empty_to = fed.view.block_number()
    assert empty_to == before + 2 and not reader.any_in(before + 1, empty_to)
    fed.admin.open_round()
    assert reader.any_in(empty_to + 1, fed.view.block_number())
    assert reader.any_in(0, 10_000)  # longer than a page: yes without asking (the caller reads it all)
