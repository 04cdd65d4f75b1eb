"""The indexer stores every event once and resumes after the last stored block."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from explorer_scenario import Scenario, build_federation

from chain.client import CoordinatorClient
from chain.events import EventReader
from chain.profile import DEVNET
from localnet.anvil import rpc, start_anvil, stop_anvil
from node.explorer.api import Api
from node.explorer.db import Database
from node.explorer.errors import IndexMismatch
from node.explorer.indexer import Indexer, block_time_ms


def counts(db: Database) -> dict[str, int]:
    tables = ("events", "commits", "attempts", "votes", "rewards", "metrics", "rounds", "members")
    return {t: int(db.one(f"SELECT count(*) AS c FROM {t}")["c"]) for t in tables}  # type: ignore[index]


def test_restart_resumes_from_the_stored_block(fresh_devnet: Scenario, tmp_path: Path) -> None:
    sc = fresh_devnet
    path = tmp_path / "index.sqlite"
    db = Database(path)
    ix = Indexer.connect(sc.rpc_url, sc.coordinator, db)
    ix.sync_once()
    last = db.last_block()
    before = counts(db)
    assert last == ix.client.block_number()
    assert before["rounds"] == 1 and before["commits"] == 3 and before["rewards"] > 0
    db.close()

    # Two more transactions = two more blocks while the explorer is down.
    admin = CoordinatorClient(sc.rpc_url, sc.coordinator, sc.admin, DEVNET)
    admin.open_round()
    admin.with_wallet(sc.members[2]).commit_update(
        2, hashlib.sha256(b"after restart").digest(), "bafkreix", 5
    )
    head = admin.block_number()

    db = Database(path)
    ix = Indexer.connect(sc.rpc_url, sc.coordinator, db)
    ix.reader = EventReader(ix.client, page_size=1)  # one get_logs call per block read
    assert ix.next_block(head) == last + 1
    assert ix.sync_once() == 2
    assert ix.reader.pages_read == head - last  # only the new blocks, no rescan from the deployment
    after = counts(db)
    assert after["events"] == before["events"] + 2
    assert after["rounds"] == 2 and after["commits"] == 4
    assert db.last_block() == head
    # nothing new: nothing read
    ix.reader.pages_read = 0
    assert ix.sync_once() == 0 and ix.reader.pages_read == 0
    # a block without coordinator events still moves the indexed head and its time
    tx = admin.send_eth(sc.members[0].address, 1)
    assert ix.sync_once() == 0 and db.last_block() == tx.block_number
    ts = int(ix.client.w3.eth.get_block(tx.block_number)["timestamp"])
    assert Api(db).status()["last_block_time_ms"] == ts * 1000
    db.close()


def test_fresh_index_starts_at_the_deployment_block(fresh_devnet: Scenario, tmp_path: Path) -> None:
    db = Database(tmp_path / "index.sqlite")
    ix = Indexer.connect(fresh_devnet.rpc_url, fresh_devnet.coordinator, db)
    assert fresh_devnet.deploy_block > 0
    assert ix.next_block(ix.client.block_number()) == fresh_devnet.deploy_block
    ix.sync_once()
    first = db.one("SELECT min(block) AS b, name FROM events")
    assert first is not None and first["b"] == fresh_devnet.deploy_block and first["name"] == "Deployed"
    explicit = Indexer.connect(
        fresh_devnet.rpc_url, fresh_devnet.coordinator, Database(":memory:"), from_block=7
    )
    assert explicit.next_block(100) == 7
    db.close()


def test_storing_a_page_twice_changes_nothing(fresh_devnet: Scenario, tmp_path: Path) -> None:
    db = Database(tmp_path / "index.sqlite")
    ix = Indexer.connect(fresh_devnet.rpc_url, fresh_devnet.coordinator, db)
    head = ix.client.block_number()
    events = ix.reader.read(0, head)
    ix._store_page(head, events)
    once = counts(db)
    ix._store_page(head, events)
    assert counts(db) == once
    assert once["events"] == len(events)
    db.close()


def test_index_file_refuses_another_coordinator(fresh_devnet: Scenario, tmp_path: Path) -> None:
    db = Database(tmp_path / "index.sqlite")
    db.bind_identity(16166, "0x" + "11" * 20)
    with pytest.raises(IndexMismatch, match="pass another --db or delete the file"):
        Indexer.connect(fresh_devnet.rpc_url, fresh_devnet.coordinator, db)
    db.close()


def test_block_times_are_converted_per_block() -> None:
    assert block_time_ms(1_795_566_208) == 1_795_566_208_000  # anvil: seconds
    assert block_time_ms(1_795_566_208_123) == 1_795_566_208_123  # Cypherium blocks: milliseconds


@pytest.mark.parametrize("profile", ["auto", "devnet", "cypherium"])
def test_millisecond_chain_times_are_shown_as_milliseconds(tmp_path: Path, profile: str) -> None:
    """Cypherium's blocks carry ms timestamps: imitate that on anvil; the explorer learns the unit
    from the blocks whatever profile it is given (the default, a wrong one, the right one)."""
    anvil = start_anvil(tmp_path / "anvil.log")
    try:
        now_ms = int(time.time() * 1000)
        rpc(anvil.rpc_url, "evm_setNextBlockTimestamp", [now_ms])
        rpc(anvil.rpc_url, "evm_mine", [])
        sc = build_federation(
            anvil.rpc_url, tmp_path / "files", 2, ("ok",), DEVNET.replace(time_unit_ms=None)
        )
        db = Database(tmp_path / "index.sqlite")
        ix = Indexer.connect(sc.rpc_url, sc.coordinator, db, profile=profile)
        ix.sync_once()
        api = Api(db)
        assert api.status()["time_unit_ms"] is True
        r = api.round_detail(1)
        opened_ts = int(ix.client.w3.eth.get_block(r["opened"]["block"])["timestamp"])
        assert opened_ts > now_ms - 1
        assert r["opened"]["time_ms"] == opened_ts  # not multiplied by 1000
        assert r["commit_deadline_ms"] == r["commit_deadline"] == opened_ts + 30_000  # 30 s in ms
        assert api.overview()["federation"]["params"]["commit_duration"] == 30_000
        db.close()
    finally:
        stop_anvil(anvil.pid)
