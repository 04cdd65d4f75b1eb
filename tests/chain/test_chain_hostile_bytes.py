"""Issue 18: no chain content can stop event reading.

Every dynamic field of every coordinator event (strings, arrays, and the numbers a member chooses)
gets arbitrary content, encoded exactly as the EVM encodes it. The decoder, the node's fold of the
event into its state store, and the explorer's indexer must all move past it. Strings are bytes
to the ABI: invalid UTF-8 comes out as visible ``\\xNN`` escapes.

The malformed-log cases (data that does not decode as its event at all) can only come from a
broken or hostile RPC, which anvil cannot be made into: `_HostileRpc` below is that fake.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.abi_text import chain_text
from chain.artifacts import load_artifact
from chain.events import EventDecoder, EventReader
from chain.types import EVENT_TYPES
from node import round as rounds
from node.behaviour import HonestBehaviour
from node.errors import Retired
from node.explorer.api import Api, safe_route
from node.explorer.db import Database
from node.explorer.indexer import _store_event
from node.state import StateStore

ABI = load_artifact("Coordinator").abi
EVENTS = {e["name"]: e for e in ABI if e.get("type") == "event" and e["name"] in EVENT_TYPES}
ME = "0x" + "ab" * 20


class _Contract:
    abi = ABI


DECODER = EventDecoder(_Contract)  # type: ignore[arg-type]


# The numbers a member chooses freely; every other number is the contract's own (a round, an
# attempt, a deadline) and realistic ones are used in the first test, arbitrary ones in the second.
MEMBER_NUMBERS = {("UpdateCommitted", "numSamples"), ("MetricsReported", "n")}


def _value(abi_type: str, wild: bool) -> st.SearchStrategy[Any]:
    honest_uint = st.integers(0, 2**40)
    wild_uint = st.one_of(st.integers(0, 2**256 - 1), st.integers(0, 10))
    address = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
    by_type: dict[str, st.SearchStrategy[Any]] = {
        "address": address,
        "address[]": st.lists(address, max_size=5),
        "uint256": wild_uint if wild else honest_uint,
        "bytes32": st.binary(min_size=32, max_size=32),
        "bool": st.booleans(),
        "string": st.one_of(
            st.binary(max_size=300),  # any bytes: mostly invalid UTF-8
            st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.sampled_from([b"\xff\xfe", b"/ip4/\xc3\x28/tcp/1,name=\xff", b"\x00", b"<script>"]),
        ),
    }
    if abi_type.startswith("uint") and abi_type != "uint256":  # uint8 (a parameter's index), ...
        top = 2 ** int(abi_type[4:]) - 1
        return st.integers(0, top) if wild else st.integers(0, min(top, 2**40))
    return by_type[abi_type]


def _wire_type(abi_type: str) -> str:
    return "bytes" if abi_type == "string" else abi_type  # the same encoding, raw bytes allowed


@st.composite
def raw_logs(draw: st.DrawFn, wild: bool = False) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(event name, argument values, the raw log an RPC would return for them); ``wild``: every
    number arbitrary, not only those a member chooses."""
    name = draw(st.sampled_from(sorted(EVENTS)))
    inputs = EVENTS[name]["inputs"]
    values = {i["name"]: draw(_value(i["type"], wild or (name, i["name"]) in MEMBER_NUMBERS)) for i in inputs}
    topics = [event_abi_to_log_topic(EVENTS[name])]
    topics += [encode([i["type"]], [values[i["name"]]]) for i in inputs if i["indexed"]]
    plain = [i for i in inputs if not i["indexed"]]
    data = encode([_wire_type(i["type"]) for i in plain], [values[i["name"]] for i in plain])
    raw = {
        "address": "0x" + "11" * 20,
        "topics": topics,
        "data": data,
        "blockNumber": draw(st.integers(1, 10**6)),
        "logIndex": draw(st.integers(0, 50)),
        "transactionHash": draw(st.binary(min_size=32, max_size=32)),
    }
    return name, values, raw


def _node(tmp: Path) -> Any:
    async def chain(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return SimpleNamespace(
        store=StateStore(tmp / "state", "0x" + "11" * 20, ME),
        me=ME,
        monitor=None,
        host=None,
        members=frozenset({ME}),
        commit_deadlines={},
        commits_closed=set(),
        elected={},
        reported={},
        to_unix=lambda t: t / 1000,
        behaviour=HonestBehaviour(),
        cfg=SimpleNamespace(path=tmp / "medfed.toml"),
        chain=chain,
        client=SimpleNamespace(members=lambda: [ME]),
    )


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Database]:
    tmp = tmp_path_factory.mktemp("hostile-bytes")
    return _node(tmp), Database(tmp / "index.sqlite")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=raw_logs())
def test_any_event_content_decodes_and_every_reader_moves_past_it(
    case: tuple[str, dict[str, Any], dict[str, Any]], sinks: tuple[Any, Database]
) -> None:
    name, values, raw = case
    event = DECODER.decode(raw)
    assert event is not None and event.name == name
    for item in EVENTS[name]["inputs"]:
        if item["type"] == "string" and not (name == "PeerPublished" and item["name"] == "multiaddrs"):
            got = getattr(event, "peer_id" if item["name"] == "peerId" else _snake(item["name"]))
            assert got == chain_text(values[item["name"]])  # invalid UTF-8 kept as \xNN escapes

    node, db = sinks
    try:
        trio.run(rounds.apply_event, node, event)  # the node folds it in: nothing to skip
    except Retired:  # by design: the members removed us or handed the federation over
        assert name in ("MemberRemoved", "Successor")
    with db.transaction() as conn:
        _store_event(conn, event)
    row = db.one(
        "SELECT name FROM events WHERE block = ? AND log_index = ?", (event.block_number, event.log_index)
    )
    assert row is not None and row["name"] == name  # the explorer stored it
    _api_answers(db)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=raw_logs(wild=True))
def test_even_impossible_numbers_are_skipped_not_fatal(
    case: tuple[str, dict[str, Any], dict[str, Any]], sinks: tuple[Any, Database]
) -> None:
    """Numbers only a lying RPC could return (a uint256 round): skipped at worst, never raised."""
    event = DECODER.decode(case[2])
    assert event is not None
    node, db = sinks
    with contextlib.suppress(Retired):  # by design (above); anything else must not escape
        trio.run(rounds._apply_or_skip, node, event)
    with db.transaction() as conn:
        _store_event(conn, event)
    _api_answers(db)


def _api_answers(db: Database) -> None:
    api = Api(db)
    for path in ("/api/events", "/api/members", "/api/rounds"):
        status, _ = safe_route(api, path, {"limit": ["1000"]})
        assert status == 200


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def test_invalid_utf8_is_shown_escaped_not_replaced() -> None:
    assert chain_text(b"Qm\xff\xfe") == "Qm\\xff\\xfe"
    assert chain_text("São Paulo".encode()) == "São Paulo"


class _HostileRpc:
    """FAKE: an RPC that returns logs no contract could have emitted (truncated data, missing
    topics). Anvil always encodes correctly, so this case needs a stand-in."""

    def __init__(self, logs: list[dict[str, Any]]) -> None:
        self.address = "0x" + "11" * 20
        self.decoder = DECODER
        self.profile = SimpleNamespace(log_page_size=1000)
        self.w3 = SimpleNamespace(eth=SimpleNamespace(get_logs=lambda _q: logs))

    def block_number(self) -> int:
        return 10


@settings(max_examples=100, deadline=None)
@given(good=raw_logs(), garbage=st.binary(max_size=200), cut=st.integers(0, 2))
def test_an_undecodable_log_is_skipped_not_the_page(
    good: tuple[str, dict[str, Any], dict[str, Any]], garbage: bytes, cut: int
) -> None:
    _, _, raw = good
    bad = dict(raw, data=garbage, topics=raw["topics"][: max(1, len(raw["topics"]) - cut)])
    reader = EventReader(_HostileRpc([raw, bad, raw]))  # type: ignore[arg-type]
    events = reader.read(0, 10)
    assert 2 <= len(events) <= 3  # both good copies always; the bad one only if it happens to decode


def test_the_skip_names_block_and_transaction(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "topics": [event_abi_to_log_topic(EVENTS["PeerPublished"]), b"\x00" * 32],
        "data": b"\x01\x02",
        "blockNumber": 1234,
        "logIndex": 0,
        "transactionHash": b"\xaa" * 32,
    }
    with caplog.at_level(logging.WARNING, logger="chain.events"):
        assert EventReader(_HostileRpc([raw])).read(0, 10) == []  # type: ignore[arg-type]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "block 1234" in line and "0x" + "aa" * 32 in line


def test_control_characters_cannot_forge_log_lines() -> None:
    assert chain_text(b"ok\n2026-12-06 INFO round 9 FINALIZED\x1b[31m") == (
        "ok\\x0a2026-12-06 INFO round 9 FINALIZED\\x1b[31m"
    )
    assert chain_text("a\u202eb".encode()) == "a\\u202eb"  # a bidi override
