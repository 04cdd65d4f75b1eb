"""Gossip announcements: one typed, versioned record and its single encode/decode place.

Wire form (version 1): UTF-8 JSON object with exactly the keys below, sorted, no spaces
(``json.dumps(..., sort_keys=True, separators=(",", ":"))``). The pubsub envelope carries the
libp2p signature made with the host (= wallet) key; ``peer_id`` must equal the envelope's sender.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from p2p.errors import MessageError

VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
KINDS = frozenset({"update", "aggregate", "global"})
MAX_MESSAGE_BYTES = 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = ("kind", "peer_id", "round", "sha256", "size", "timestamp_ms", "version")


@dataclass(frozen=True)
class Announcement:
    """'peer_id can serve the file with this sha256, which is round's <kind> adapter'."""

    version: int
    kind: str
    round: int
    sha256: str
    size: int
    peer_id: str
    timestamp_ms: int

    @classmethod
    def new(cls, kind: str, round: int, sha256: str, size: int, peer_id: str) -> Announcement:
        """An announcement stamped with the current version and time (validated)."""
        a = cls(VERSION, kind, round, sha256.lower(), size, peer_id, int(time.time() * 1000))
        a.validate()
        return a

    def validate(self) -> None:
        """Raise MessageError naming the first field that is out of range."""
        _check(self.__dict__)

    def encode(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no whitespace)."""
        self.validate()
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Announcement:
        """Parse and validate wire bytes; raise MessageError with the reason."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageError(f"announcement is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"announcement is not UTF-8 JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise MessageError("announcement must be a JSON object")
        _check(obj)
        return cls(**{k: obj[k] for k in _FIELDS})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(obj: dict[str, Any]) -> None:
    version = obj.get("version")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        raise MessageError(f"unknown announcement version {version!r} (upgrade medfed)")
    if set(obj) != set(_FIELDS):
        raise MessageError(f"announcement keys {sorted(obj)} != {list(_FIELDS)}")
    if obj["kind"] not in KINDS:
        raise MessageError(f"kind {obj['kind']!r} not one of {sorted(KINDS)}")
    for key in ("round", "size", "timestamp_ms"):
        if not _is_int(obj[key]) or obj[key] < 0:
            raise MessageError(f"{key} must be a non-negative integer, got {obj[key]!r}")
    if not isinstance(obj["sha256"], str) or not _SHA256.match(obj["sha256"]):
        raise MessageError("sha256 must be 64 lowercase hex characters")
    if not isinstance(obj["peer_id"], str) or not 1 <= len(obj["peer_id"]) <= 128:
        raise MessageError("peer_id must be a base58 PeerID string")
