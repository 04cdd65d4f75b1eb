"""Announcement wire format: canonical, versioned, strict."""

from __future__ import annotations

import json

import pytest

from p2p.errors import MessageError
from p2p.messages import Announcement

PEER = "16Uiu2HAmFmVuoPnnGEwZKCpXcgnCcTnM8zpyZFz9hL5spp4An6qX"
SHA = "ab" * 32


def test_encoding_is_canonical_json_and_round_trips() -> None:
    a = Announcement(1, "update", 3, SHA, 70_000_000, PEER, 1_700_000_000_000)
    wire = a.encode()
    assert wire == (
        b'{"kind":"update","peer_id":"'
        + PEER.encode()
        + b'","round":3,"sha256":"'
        + SHA.encode()
        + b'","size":70000000,"timestamp_ms":1700000000000,"version":1}'
    )
    assert Announcement.decode(wire) == a


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": 2}, "version"),
        ({"kind": "weights"}, "kind"),
        ({"round": -1}, "round"),
        ({"size": True}, "size"),
        ({"sha256": "AB" * 32}, "sha256"),
        ({"sha256": "ab" * 31}, "sha256"),
        ({"extra": 1}, "keys"),
        ({"peer_id": ""}, "peer_id"),
    ],
)
def test_malformed_fields_are_rejected_with_the_reason(change: dict[str, object], reason: str) -> None:
    obj = json.loads(Announcement(1, "global", 0, SHA, 1, PEER, 0).encode())
    obj.update(change)
    with pytest.raises(MessageError, match=reason):
        Announcement.decode(json.dumps(obj).encode())


def test_non_json_and_oversize_payloads_are_rejected() -> None:
    with pytest.raises(MessageError, match="JSON"):
        Announcement.decode(b"\xff\xfe")
    with pytest.raises(MessageError, match="limit"):
        Announcement.decode(b" " * 2000)
    with pytest.raises(MessageError, match="object"):
        Announcement.decode(b"[1]")


def test_new_stamps_version_and_time_and_normalises_hash() -> None:
    a = Announcement.new("aggregate", 2, SHA.upper(), 5, PEER)
    assert a.version == 1 and a.sha256 == SHA and a.timestamp_ms > 1_600_000_000_000
