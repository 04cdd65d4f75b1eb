"""Gossip flood guard: cheap per-peer checks that run before libp2p verifies a message's signature.

py-libp2p 0.8.1's `Pubsub.push_msg` verifies the signature, then runs topic validators, for every
message, however many a peer sends. `GuardedPubsub` puts `GossipGuard.precheck` in front of it:

1. already seen (same from+seqno): left to libp2p (it returns at once);
2. the forwarder (the authenticated peer that sent it to us) spent its invalid-message budget:
   drop;
3. payload over `max_message_bytes`: drop (charged to the forwarder);
4. the signer spent its announcement budget: drop (the budget is spent only after the
   signature checked out, so nobody can spend another peer's budget by forging its id);
5. the same signer already sent this exact payload (a replay under a new seqno): drop;
6. bad signature: drop (charged to the forwarder).

The topic validator then calls `admit` (spends the signer's token), and `invalid` or `accepted`.
Drops are counted by category in `drops.totals` and logged collapsed (`limits.DropLog`).
"""

from __future__ import annotations

import functools
from collections import deque

from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator

from p2p.limits import DropLog, FloodLimits, PeerBuckets, RecentSet

DROP_CATEGORIES = ("blocked", "oversized", "rate_limited", "duplicate", "bad_signature", "invalid")


@functools.lru_cache(maxsize=4096)
def b58(peer: bytes) -> str:
    """Base58 of a raw peer id (cached: flood senders repeat)."""
    try:
        return ID(peer).to_base58()
    except Exception:
        return peer[:16].hex() or "?"


class GossipGuard:
    """Per-peer gossip budgets and the collapsed drop log (see the module docstring)."""

    def __init__(
        self, limits: FloodLimits, dropped: deque[tuple[str, str]] | None = None, host: str = ""
    ) -> None:
        self.limits = limits
        self.senders = PeerBuckets(limits.gossip_rate, limits.gossip_burst)
        self.forwarders = PeerBuckets(limits.invalid_rate, limits.invalid_burst)
        self.recent = RecentSet(limits.dedupe_entries)
        self.drops = DropLog("gossip messages", limits.log_interval, host)
        self.dropped: deque[tuple[str, str]] = dropped if dropped is not None else deque(maxlen=1000)

    def _drop(self, peer: str, category: str, reason: str) -> bool:
        self.drops.note(peer, category, reason)
        self.dropped.append((peer, reason))
        return False

    def precheck(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Cheap checks before libp2p's own signature check and our validator; False = drop."""
        fwd = forwarder.to_bytes()
        if not self.forwarders.has(fwd):
            return self._drop(b58(fwd), "blocked", "forwards invalid messages: dropped unread for now")
        if len(msg.data) > self.limits.max_message_bytes:
            self.forwarders.take(fwd)
            return self._drop(
                b58(fwd), "oversized", f"{len(msg.data)}-byte message, limit {self.limits.max_message_bytes}"
            )
        sender = msg.from_id
        if not self.senders.has(sender):
            return self._drop(b58(sender), "rate_limited", f"over {self.limits.gossip_rate:g} messages/s")
        if (sender, msg.data) in self.recent:
            return self._drop(b58(sender), "duplicate", "repeats an announcement it already sent")
        if not signature_validator(msg):
            self.forwarders.take(fwd)
            return self._drop(b58(fwd), "bad_signature", f"bad signature (claims to be from {b58(sender)})")
        return True

    def admit(self, msg: rpc_pb2.Message) -> bool:
        """Spend the (signature-checked) signer's token; False = over its rate, dropped."""
        if self.senders.take(msg.from_id):
            return True
        return self._drop(b58(msg.from_id), "rate_limited", f"over {self.limits.gossip_rate:g} messages/s")

    def invalid(self, forwarder: ID, msg: rpc_pb2.Message, reason: str) -> None:
        """A message our validator rejected: logged collapsed, charged to the forwarder."""
        self.forwarders.take(forwarder.to_bytes())
        self._drop(b58(msg.from_id), "invalid", reason)

    def accepted(self, msg: rpc_pb2.Message) -> None:
        """Remember a valid payload so that replays of it are dropped unverified."""
        self.recent.add((msg.from_id, msg.data))


class GuardedPubsub(Pubsub):
    """Pubsub whose incoming messages pass `GossipGuard.precheck` before libp2p's own checks."""

    guard: GossipGuard | None = None

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        guard = self.guard
        if (
            guard is not None
            and msg_forwarder != self.my_id
            and not self._is_msg_seen(msg)
            and not guard.precheck(msg_forwarder, msg)
        ):
            return
        await super().push_msg(msg_forwarder, msg)
