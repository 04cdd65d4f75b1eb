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

Even a dropped message costs libp2p a read, a decryption, a protobuf parse and a check of the
RPC's signed peer record. A directly connected peer whose own messages we keep dropping (more
than `cutoff_drops` at once, beyond `gossip_rate` per second) is therefore cut off: its gossip
stream to us is reset and new ones refused for `cutoff_seconds`, then it is disconnected so
that it reconnects afresh. Messages of other signers it relays never count against it.

Gossip about messages (IHAVE) would make us ask again (IWANT) for every message we dropped, as
libp2p only remembers the ones it accepted: `GuardedGossipSub` ignores IHAVEs from peers that are
blocked or cut off, and the ids of signers that are over their rate.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.utils import safe_bytes_from_hex
from libp2p.pubsub.validators import signature_validator

from p2p.limits import DropLog, FloodLimits, PeerBuckets, RecentSet

log = logging.getLogger(__name__)
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
        self.drop_budget = PeerBuckets(limits.gossip_rate, limits.cutoff_drops)
        # bytes of a peer's gossip stream cost us (decrypting, parsing, checking the RPC's signed
        # peer record) even when nothing in them is accepted
        self.read_budget = PeerBuckets(limits.cutoff_bytes_rate, limits.cutoff_bytes)
        self.cut_until: dict[bytes, float] = {}  # raw peer id -> monotonic time its cut-off ends
        self.cut_offs = 0
        self.host = host
        self.on_cut: Callable[[ID], None] | None = None  # GuardedPubsub stops reading the peer

    def _drop(self, peer: str, category: str, reason: str, charge: bytes | None = None) -> bool:
        """Count and log a drop; `charge` (a raw peer id) is the connected peer it counts against."""
        self.drops.note(peer, category, reason)
        self.dropped.append((peer, reason))
        if charge is not None and not self.drop_budget.take(charge):
            self._cut(charge, "too many dropped messages")
        return False

    def read(self, peer: bytes, size: int) -> None:
        """`size` bytes read from `peer`'s gossip stream; cuts it off past its budget."""
        if not self.read_budget.take(peer, size):
            self._cut(peer, "too many gossip bytes")

    def _cut(self, peer: bytes, why: str) -> None:
        if self.is_cut(peer):
            return
        self.cut_until[peer] = time.monotonic() + self.limits.cutoff_seconds
        self.cut_offs += 1
        line = "cutting off gossip from %s for %.0f s: %s"
        log.warning(line, b58(peer), self.limits.cutoff_seconds, why, extra={"host": self.host})
        if self.on_cut is not None:
            self.on_cut(ID(peer))

    def is_cut(self, peer: bytes) -> bool:
        """Whether `peer`'s gossip is cut off now."""
        until = self.cut_until.get(peer)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self.cut_until[peer]
        return False

    def precheck(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Cheap checks before libp2p's own signature check and our validator; False = drop."""
        fwd = forwarder.to_bytes()
        if not self.forwarders.has(fwd):
            return self._drop(b58(fwd), "blocked", "forwards invalid messages: dropped unread for now", fwd)
        if len(msg.data) > self.limits.max_message_bytes:
            self.forwarders.take(fwd)
            size = f"{len(msg.data)}-byte message, limit {self.limits.max_message_bytes}"
            return self._drop(b58(fwd), "oversized", size, fwd)
        sender = msg.from_id
        own = fwd if sender == fwd else None  # what a peer relays for others never counts against it
        if not self.senders.has(sender):
            return self._drop(
                b58(sender), "rate_limited", f"over {self.limits.gossip_rate:g} messages/s", own
            )
        if (sender, msg.data) in self.recent:
            return self._drop(b58(sender), "duplicate", "repeats an announcement it already sent", own)
        if not signature_validator(msg):
            self.forwarders.take(fwd)
            return self._drop(
                b58(fwd), "bad_signature", f"bad signature (claims to be from {b58(sender)})", fwd
            )
        return True

    def admit(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Spend the (signature-checked) signer's token; False = over its rate, dropped."""
        if self.senders.take(msg.from_id):
            return True
        fwd = forwarder.to_bytes()
        own = fwd if msg.from_id == fwd else None
        return self._drop(
            b58(msg.from_id), "rate_limited", f"over {self.limits.gossip_rate:g} messages/s", own
        )

    def wanted(self, forwarder: ID, msg_ids: list[bytes]) -> list[bytes] | None:
        """Of the message ids a peer offers (IHAVE), those worth asking for; None = ignore it all."""
        fwd = forwarder.to_bytes()
        if self.is_cut(fwd) or not self.forwarders.has(fwd):
            return None
        out = []
        for mid in msg_ids:
            raw = safe_bytes_from_hex(mid)
            # default message id = signer's raw peer id || 8-byte seqno
            if raw is None or len(raw) <= 8 or self.senders.has(raw[:-8]):
                out.append(mid)
        return out

    def invalid(self, forwarder: ID, msg: rpc_pb2.Message, reason: str) -> None:
        """A message our validator rejected: logged collapsed, charged to the forwarder."""
        fwd = forwarder.to_bytes()
        self.forwarders.take(fwd)
        self._drop(b58(msg.from_id), "invalid", reason, fwd)

    def accepted(self, msg: rpc_pb2.Message) -> None:
        """Remember a valid payload so that replays of it are dropped unverified."""
        self.recent.add((msg.from_id, msg.data))


class GuardedPubsub(Pubsub):
    """Pubsub whose incoming messages pass `GossipGuard.precheck` before libp2p's own checks, and
    that stops reading peers the guard cut off."""

    guard: GossipGuard | None = None
    _inbound: dict[ID, INetStream]

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

    def attach(self, guard: GossipGuard) -> None:
        """Check incoming gossip with `guard`, and stop reading the peers it cuts off."""
        self.guard = guard
        guard.on_cut = lambda peer: self.manager.run_task(self._cut_off, peer)

    async def _cut_off(self, peer: ID) -> None:
        await _reset(self.__dict__.setdefault("_inbound", {}).pop(peer, None))
        assert self.guard is not None
        await trio.sleep(self.guard.limits.cutoff_seconds)
        with trio.move_on_after(10), contextlib.suppress(Exception):
            await self.host.disconnect(peer)  # reconnecting opens fresh gossip streams both ways

    async def stream_handler(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if self.guard is not None and self.guard.is_cut(peer.to_bytes()):
            await _reset(stream)
            return
        inbound = self.__dict__.setdefault("_inbound", {})
        inbound[peer] = stream
        try:
            if self.guard is not None:
                stream = _CountedStream(stream, self.guard)  # type: ignore[assignment]
            await super().stream_handler(stream)
        finally:
            if inbound.get(peer) is stream:
                del inbound[peer]


class _CountedStream:
    """An inbound gossip stream, read in large chunks whose bytes are charged to its peer.

    libp2p reads an RPC's length prefix one byte per read, and Yamux answers each read with a
    window update: some 25 reads and a dozen frames sent per RPC. Buffering makes that one read.
    """

    CHUNK = 1 << 16

    def __init__(self, stream: INetStream, guard: GossipGuard) -> None:
        self._stream = stream
        self._guard = guard
        self._peer = stream.muxed_conn.peer_id.to_bytes()
        self._buf = b""

    async def read(self, n: int | None = None) -> bytes:
        if not self._buf:
            self._buf = await self._stream.read(self.CHUNK)
            self._guard.read(self._peer, len(self._buf))
        if n is None or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


async def _reset(stream: INetStream | None) -> None:
    if stream is not None:
        with trio.move_on_after(2), contextlib.suppress(Exception):
            await stream.reset()


class GuardedGossipSub(GossipSub):
    """GossipSub that does not ask flooders again for what the guard dropped (see the module doc)."""

    guard: GossipGuard | None = None

    async def handle_ihave(self, ihave_msg: rpc_pb2.ControlIHave, sender_peer_id: ID) -> None:
        if self.guard is not None:
            ids = self.guard.wanted(sender_peer_id, list(ihave_msg.messageIDs))
            if not ids:
                return
            if len(ids) != len(ihave_msg.messageIDs):
                ihave_msg = rpc_pb2.ControlIHave(topicID=ihave_msg.topicID, messageIDs=ids)
        await super().handle_ihave(ihave_msg, sender_peer_id)
