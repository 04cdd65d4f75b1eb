"""Flood limits: per-peer token buckets, a collapsed drop log, and a bound on streams served.

Nothing here does I/O or knows libp2p; `host.py` applies these to gossip and to the adapter
protocol. Every check is O(1) so that a flooding peer's excess costs a dict lookup, not a
signature check or a JSON parse.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FloodLimits:
    """What one peer may cost us. Defaults leave an honest federation far below every limit.

    gossip_rate / gossip_burst: announcements a member (the signer) may have accepted per second,
    sustained / at once; the excess is dropped before its signature is checked.
    invalid_rate / invalid_burst: invalid messages (bad signature, malformed, oversized, from a
    non-member) a directly connected peer may forward; past that, everything it forwards is
    dropped unread until its budget refills. Honest peers forward only what they validated.
    max_message_bytes: gossip payloads larger than this are dropped unread.
    max_streams_per_peer / max_streams: adapter requests served at once to one peer / to all;
    the excess is answered ``busy`` at once, never queued.
    cutoff_drops / cutoff_seconds: a directly connected peer whose messages we drop faster than
    that (a bucket of `cutoff_drops`, refilled at `gossip_rate`) has its gossip stream to us reset
    and is not read again for `cutoff_seconds` (its sends cost us nothing more); then it is
    disconnected so that it reconnects afresh. The same happens to a peer that sends us more than
    `cutoff_bytes` of gossip at once, beyond `cutoff_bytes_rate` per second (accepted or not: a
    member that floods costs us reading even what we drop).
    log_interval: seconds between the summary lines of dropped gossip (one per noisy peer).
    dedupe_entries: identical (signer, payload) pairs remembered to drop replays unverified.
    """

    gossip_rate: float = 10.0
    gossip_burst: int = 100
    invalid_rate: float = 1.0
    invalid_burst: int = 20
    max_message_bytes: int = 1024
    max_streams_per_peer: int = 1
    max_streams: int = 64
    cutoff_drops: int = 300
    cutoff_bytes: int = 512 << 10
    cutoff_bytes_rate: float = 32 << 10
    cutoff_seconds: float = 60.0
    log_interval: float = 60.0
    dedupe_entries: int = 16384

    def __post_init__(self) -> None:
        for name in ("gossip_rate", "invalid_rate", "log_interval", "cutoff_seconds", "cutoff_bytes_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FloodLimits.{name} must be > 0")
        counts = (
            "gossip_burst",
            "invalid_burst",
            "max_message_bytes",
            "max_streams_per_peer",
            "max_streams",
            "cutoff_drops",
            "cutoff_bytes",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"FloodLimits.{name} must be >= 1")


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def has(self, now: float) -> bool:
        """Whether a token is available (without taking it)."""
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take `n` tokens if available; else empty the bucket and say no."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        self.tokens = 0.0
        return False


class PeerBuckets:
    """One token bucket per key (a peer), created full on first sight; idle full buckets are pruned."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._next_prune = clock() + 60.0

    def _bucket(self, key: Hashable, now: float) -> TokenBucket | None:
        b = self._buckets.get(key)
        if now >= self._next_prune:
            self._prune(now)
        return b

    def has(self, key: Hashable) -> bool:
        """Whether `key` could spend a token now (a peer never seen can)."""
        now = self.clock()
        b = self._bucket(key, now)
        return b is None or b.has(now)

    def take(self, key: Hashable, n: float = 1.0) -> bool:
        """Spend `n` of `key`'s tokens (never below zero); False if it had fewer than `n` left."""
        now = self.clock()
        b = self._bucket(key, now)
        if b is None:
            b = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return b.take(now, n)

    def _prune(self, now: float) -> None:
        self._next_prune = now + 60.0
        for key, b in list(self._buckets.items()):
            b._refill(now)
            if b.tokens >= b.burst:
                del self._buckets[key]


class RecentSet:
    """A bounded set that forgets its oldest entries (replay detection)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def add(self, key: Hashable) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class DropLog:
    """Collapses drop logging: a peer's first dropped message is logged with its reason, then only
    a summary per peer and interval ("dropped N gossip messages from PEER in the last 60 s ...").

    `host` (our own peer id) goes into each record as the `host` attribute, not into the text.
    """

    def __init__(self, what: str, interval: float, host: str = "", logger: logging.Logger = log) -> None:
        self.what = what
        self.interval = interval
        self.log = logger
        self.extra = {"host": host}
        self.totals: Counter[str] = Counter()  # category -> drops since start (tests, metrics)
        self._pending: dict[str, Counter[str]] = {}  # peer -> category -> drops since last summary
        self._announced: set[str] = set()
        self._window_start = time.monotonic()

    def note(self, peer: str, category: str, reason: str) -> None:
        """Count one drop; logs only a peer's first."""
        self.totals[category] += 1
        if peer not in self._announced:
            self._announced.add(peer)
            self.log.warning(
                "dropped %s from %s: %s (further drops from it are summarised every %.0f s)",
                self.what,
                peer,
                reason,
                self.interval,
                extra=self.extra,
            )
            return
        self._pending.setdefault(peer, Counter())[category] += 1

    def flush(self) -> int:
        """Log one summary line per peer with drops since the last flush; return the lines logged."""
        now = time.monotonic()
        span = now - self._window_start
        self._window_start = now
        pending, self._pending = self._pending, {}
        self._announced = set(pending)  # a peer quiet for a whole interval gets a first line again
        for peer, counts in pending.items():
            detail = ", ".join(f"{c} {n}" for c, n in counts.most_common())
            total = sum(counts.values())
            line = "dropped %d %s from %s in the last %.0f s (%s)"
            self.log.warning(line, total, self.what, peer, span, detail, extra=self.extra)
        return len(pending)


class StreamLimiter:
    """Counts streams in service per peer and in total; `acquire` never waits."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._by_peer: Counter[str] = Counter()
        self._active = 0
        self.refused = 0

    @property
    def active(self) -> int:
        return self._active

    def acquire(self, peer: str) -> str | None:
        """Take a slot for `peer`; None if taken, else why not (the slot is not taken)."""
        if self._by_peer[peer] >= self.per_peer:
            self.refused += 1
            return f"already serving {self.per_peer} streams to this peer"
        if self._active >= self.total:
            self.refused += 1
            return f"already serving {self.total} streams"
        self._by_peer[peer] += 1
        self._active += 1
        return None

    def release(self, peer: str) -> None:
        """Give back a slot taken by `acquire`."""
        self._active -= 1
        self._by_peer[peer] -= 1
        if self._by_peer[peer] <= 0:
            del self._by_peer[peer]
