"""The medfed libp2p host: wallet-key identity, one gossipsub topic, the adapter transfer protocol."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub import rpc_queue
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_1_0
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_1_1
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2p import wire
from p2p.errors import (
    ConnectError,
    FileTooLarge,
    IdentityError,
    IpfsError,
    MessageError,
    NoProviderError,
    TransferError,
    TransferRefused,
)
from p2p.guard import GossipGuard, GuardedGossipSub, GuardedPubsub
from p2p.identity import address_from_peer_id, key_pair_from_private_key
from p2p.ipfs import KuboClient
from p2p.limits import DropLog, FloodLimits, StreamLimiter
from p2p.messages import Announcement
from p2p.relay import RelayService, RelaySettings, is_circuit, is_relayed_conn
from p2p.transfer import (
    PROTOCOL_ID,
    Oversize,
    TooLarge,
    WrongHash,
    fetch_from_stream,
    refuse,
    serve_request,
)

log = logging.getLogger(__name__)

# Penalty points order providers (least first). Failures (offline, timeout, hung up) add 1 and
# are forgiven by the next good transfer; malicious bytes (wrong hash, oversize) add 10 and ban the
# peer as a provider for BAN_SECONDS, so an honest peer that was briefly offline is never banned.
PENALTY_FAILED = 1.0
PENALTY_HOSTILE = 10.0
BAN_SECONDS = 600.0
ANNOUNCEMENT_BUFFER = 65536


@dataclass(frozen=True)
class GossipSettings:
    """Gossipsub knobs. Defaults let a burst of hundreds of announcements from ~10 peers through intact.

    libp2p 0.8.1 defaults would drop it: 10 msgs/s per peer and topic (router spam protection,
    which also applies to our own publishes), 32-slot outbound queues and subscription channel.
    """

    degree: int = 8
    degree_low: int = 6
    degree_high: int = 16
    heartbeat_interval: int = 1
    max_messages_per_second: float = 10_000.0
    queue_size: int = 8192
    max_pending_messages_per_peer: int = 8192


def _raise_pubsub_queue_limits(size: int) -> None:
    # libp2p 0.8.1 has no constructor argument for these two sizes: the subscription channel
    # reads a module global at subscribe() time and RpcQueue() takes its default max_size
    # (bound at definition time) when a peer joins. Raising them is process-wide and monotone.
    if size > pubsub_module.SUBSCRIPTION_CHANNEL_SIZE:
        pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = size
    defaults = rpc_queue.RpcQueue.__init__.__defaults__ or ()
    if defaults and defaults[0] < size:
        rpc_queue.RpcQueue.__init__.__defaults__ = (size, *defaults[1:])


def _to_multiaddr(addr: str | multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    return addr if isinstance(addr, multiaddr.Multiaddr) else multiaddr.Multiaddr(addr)


class MedfedHost:
    """A running host. Create it with `open_host`; do not construct directly."""

    def __init__(
        self,
        host: IHost,
        pubsub: Pubsub,
        gossipsub: GossipSub,
        topic: str,
        is_member: Callable[[str], bool],
        may_serve: Callable[[str, str], bool],
        store_dir: Path,
        max_file_bytes: int,
        request_timeout: float,
        reconnect_interval: float,
        ipfs: KuboClient | None = None,
        limits: FloodLimits | None = None,
    ) -> None:
        self.host = host
        self.ipfs = ipfs
        self.pubsub = pubsub  # low level; exposed for tests and diagnostics
        self.gossipsub = gossipsub
        self.topic = topic
        self.is_member = is_member
        self.may_serve = may_serve
        self.store_dir = store_dir
        self.max_file_bytes = max_file_bytes
        self.request_timeout = request_timeout
        self.reconnect_interval = reconnect_interval
        self.peer_id: str = host.get_id().to_base58()
        self.address: str = address_from_peer_id(self.peer_id)
        self._served: dict[str, Path] = {}
        self._providers: dict[str, dict[str, None]] = defaultdict(dict)  # sha -> ordered peer ids
        self._seen: set[tuple[str, str, int, str]] = set()
        self._keep: dict[ID, list[multiaddr.Multiaddr]] = {}
        self._penalty: dict[str, float] = defaultdict(float)
        self._banned_until: dict[str, float] = {}
        # Bounded so that a flooding member cannot grow our memory without limit.
        channel = trio.open_memory_channel[tuple[Announcement, str]](ANNOUNCEMENT_BUFFER)
        self._ann_send, self._ann_recv = channel
        # (peer id, reason) of the latest gossip dropped (by the flood guard or the validator)
        self.dropped: deque[tuple[str, str]] = deque(maxlen=1000)
        self.limits = limits or FloodLimits()
        self.guard = GossipGuard(self.limits, self.dropped, self.peer_id)
        self.streams = StreamLimiter(self.limits.max_streams_per_peer, self.limits.max_streams)
        self.stream_drops = DropLog("adapter streams", self.limits.log_interval, self.peer_id)
        self.relay: RelayService | None = None  # circuit relay v2 (p2p/relay.py), set by open_host

    # ----------------------------------------------------------------- addresses
    def listen_multiaddrs(self) -> list[str]:
        """Our listen addresses, each ending in /p2p/<peer id>."""
        return [str(a) for a in self.host.get_addrs()]

    def connected_peers(self) -> list[str]:
        """PeerIDs we hold a connection to."""
        return [p.to_base58() for p in self.host.get_connected_peers()]

    async def connect(self, multiaddrs: Iterable[str], keep: bool = True) -> list[str]:
        """Dial each '/ip4/.../tcp/.../p2p/<id>' (or '.../p2p-circuit/p2p/<id>') address; return the
        peer ids reached.

        A peer's direct addresses are tried first, then its relayed ones (p2p/relay.py). With
        `keep`, the peers are re-dialled by the reconnect loop whenever they drop. Raises
        ConnectError only if addresses were given and none could be reached.
        """
        by_peer: dict[ID, list[multiaddr.Multiaddr]] = {}
        for addr in multiaddrs:
            try:
                info = info_from_p2p_addr(_to_multiaddr(addr))
            except Exception as exc:
                raise ConnectError(f"{addr!r} is not a multiaddr ending in /p2p/<peer id>: {exc}") from exc
            if info.peer_id == self.host.get_id():
                continue
            by_peer.setdefault(info.peer_id, []).extend(info.addrs)
        reached: list[str] = []
        errors: list[str] = []
        for pid, addrs in by_peer.items():
            if keep:
                self._keep[pid] = list(addrs)
            try:
                await self._dial_peer(pid, addrs)
                reached.append(pid.to_base58())
            except Exception as exc:
                errors.append(f"{pid}: {exc!r}")
                log.info("could not connect to %s: %r", pid, exc)
        if errors and not reached:
            raise ConnectError("no peer reachable; check the addresses and firewalls: " + "; ".join(errors))
        return reached

    async def _dial_peer(self, pid: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        """Connect to a peer unless connected: its direct addresses first, then through relays."""
        if pid in self.host.get_connected_peers():
            return
        direct = [a for a in addrs if not is_circuit(a)]
        relayed = [a for a in addrs if is_circuit(a)]
        errors: list[str] = []
        if direct:
            try:
                self._unblock(pid)
                with trio.fail_after(self.request_timeout):
                    await self.host.connect(_peer_info(pid, direct))
                if self.relay is not None:
                    self.relay.poke()  # a directly reachable member may relay for us
                return
            except Exception as exc:
                errors.append(f"direct: {exc!r}")
        for addr in relayed:
            if self.relay is None:
                errors.append(f"{addr}: relayed address, relays are off")
                break
            try:
                with trio.fail_after(self.request_timeout):
                    await self.relay.dial(f"{addr}/p2p/{pid.to_base58()}")
                log.info("connected to %s through relay %s", pid, str(addr).split("/p2p/")[-1].split("/")[0])
                return
            except Exception as exc:
                errors.append(f"{addr}: {exc!r}")
        raise ConnectError("; ".join(errors) or "no address")

    async def _reconnect_loop(self) -> None:
        while True:
            await trio.sleep(self.reconnect_interval)
            connected = set(self.host.get_connected_peers())
            for pid, addrs in list(self._keep.items()):
                if pid in connected:
                    continue
                try:
                    await self._dial_peer(pid, addrs)
                    log.info("reconnected to %s", pid)
                except Exception as exc:
                    log.debug("reconnect to %s failed: %r", pid, exc)

    async def _connect_relay(self, addr: str) -> None:
        await self.connect([addr], keep=True)

    def advertised_multiaddrs(self) -> list[str]:
        """The addresses other members should dial: our relayed ones when we accept no inbound
        connection ([p2p] reachability = "private"), else our listen addresses."""
        if self.relay is not None and self.relay.settings.private:
            return self.relay.circuit_addrs(self.peer_id)
        return self.listen_multiaddrs()

    def _relay_candidates(self) -> list[tuple[str, str]]:
        """(peer id, direct address) of the peers we hold a direct connection to."""
        connected = set(self.host.get_connected_peers())
        out = []
        for pid, addrs in list(self._keep.items()):
            direct = [a for a in addrs if not is_circuit(a)]
            if pid in connected and direct and not self._relayed_only(pid):
                out.append((pid.to_base58(), f"{direct[0]}/p2p/{pid.to_base58()}"))
        return out

    def _relayed_only(self, pid: ID) -> bool:
        conns = self.host.get_network().get_connections(pid)
        return bool(conns) and all(is_relayed_conn(c) for c in conns)

    def _unblock(self, pid: ID) -> None:
        """Lift py-libp2p's negative dial cache (60 s after a peer failed all its addresses) before a
        deliberate re-dial: our callers pace their own retries, and a member restarted after a crash
        must be reachable again at once, not a minute later."""
        unblock = getattr(self.host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(pid)

    async def wait_for_topic_peers(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least `n` peers share our topic mesh (gossip will reach them)."""
        with trio.fail_after(timeout):
            while len(self.gossipsub.mesh.get(self.topic, ())) < n:
                await trio.sleep(0.05)

    # ----------------------------------------------------------------- gossip
    async def announce(self, announcement: Announcement) -> None:
        """Publish a signed announcement; also records ourselves as a provider."""
        if announcement.peer_id != self.peer_id:
            raise MessageError(f"announcement names {announcement.peer_id}, this host is {self.peer_id}")
        await self.pubsub.publish(self.topic, announcement.encode())

    def announcements(self) -> trio.MemoryReceiveChannel[tuple[Announcement, str]]:
        """Channel of (announcement, sender address) from other members, each delivered once."""
        return self._ann_recv

    def providers_of(self, sha256_hex: str) -> list[str]:
        """PeerIDs that announced they serve this sha256, first announcer first."""
        return list(self._providers.get(sha256_hex.lower(), {}))

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        own = forwarder == self.host.get_id()
        if not own and not self.guard.admit(forwarder, msg):
            return False  # over the signer's rate (counted by the guard)
        sender = ID(msg.from_id).to_base58() if msg.from_id else "?"
        reason = _invalid_reason(msg, sender, self.is_member)
        if reason is None:
            if not own:
                self.guard.accepted(msg)
            return True
        if own:
            self.dropped.append((sender, reason))
        else:
            self.guard.invalid(forwarder, msg, reason)  # logged collapsed, charged to the forwarder
        return False

    async def _log_drops(self) -> None:
        """One summary line per noisy peer and interval, instead of one line per dropped message."""
        while True:
            await trio.sleep(self.limits.log_interval)
            self.guard.drops.flush()
            self.stream_drops.flush()

    async def _read_gossip(self, subscription: object) -> None:
        my_id = self.host.get_id()
        while True:
            msg = await subscription.get()  # type: ignore[attr-defined]
            if ID(msg.from_id) == my_id:
                continue
            try:
                a = Announcement.decode(msg.data)  # already validated; decode is cheap
            except MessageError:
                continue
            key = (a.peer_id, a.kind, a.round, a.sha256)
            if key in self._seen:
                continue
            self._seen.add(key)
            self._providers[a.sha256][a.peer_id] = None
            try:
                self._ann_send.send_nowait((a, _address_of(a.peer_id)))
            except trio.WouldBlock:
                log.warning("announcement buffer full: dropped one from %s", a.peer_id)

    # ----------------------------------------------------------------- transfer
    def serve(self, sha256_hex: str, path: Path) -> None:
        """Offer a local file under its sha256 (the caller vouches for the hash; may_serve still gates it)."""
        self._served[sha256_hex.lower()] = Path(path)

    def unserve(self, sha256_hex: str) -> None:
        """Stop offering a file."""
        self._served.pop(sha256_hex.lower(), None)

    def penalty(self, peer_id: str) -> float:
        """Accumulated penalty points of a peer (failed or malicious transfers)."""
        return self._penalty.get(peer_id, 0.0)

    def _penalise(self, peer_id: str, points: float, reason: str) -> None:
        self._penalty[peer_id] += points
        log.warning("penalised %s by %.0f (now %.0f): %s", peer_id, points, self._penalty[peer_id], reason)
        if points >= PENALTY_HOSTILE:
            self._banned_until[peer_id] = time.monotonic() + BAN_SECONDS

    async def _handle_stream(self, stream: INetStream) -> None:
        # libp2p swallows handler exceptions, so everything is caught and logged here.
        peer = stream.muxed_conn.peer_id
        name = peer.to_base58()
        try:
            address = _address_of(name)
        except IdentityError as exc:
            self.stream_drops.note(name, "identity", str(exc))
            await _safe_reset(stream)
            return
        try:
            member = bool(self.is_member(address))
        except Exception as exc:
            log.warning("is_member(%s) raised %r", address, exc)
            member = False
        if not member:  # refused before reading anything: outsiders take no slot
            self.stream_drops.note(name, "not a member", f"{address} is not a member")
            await _refuse(stream, "refused", f"{address} is not a member")
            return
        why = self.streams.acquire(name)
        if why is not None:  # never queued: the excess is answered at once
            self.stream_drops.note(name, "busy", why)
            await _refuse(stream, "busy", why)
            return
        try:
            await self._serve_stream(stream, peer, address)
        finally:
            self.streams.release(name)

    async def _serve_stream(self, stream: INetStream, peer: ID, address: str) -> None:
        try:
            status = await serve_request(
                stream, address, self._served.get, self.may_serve, self.request_timeout
            )
            log.info("served request from %s (%s): %s", peer, address, status)
            await stream.close()
        except trio.TooSlowError:
            log.warning("adapter request from %s timed out", peer)
            await _safe_reset(stream)
        except Exception as exc:
            log.warning("adapter request from %s failed: %r", peer, exc)
            await _safe_reset(stream)

    async def fetch(
        self,
        sha256_hex: str,
        providers: Iterable[str],
        dest_dir: Path,
        max_bytes: int | None = None,
        timeout: float | None = None,
        cid: str | None = None,
    ) -> Path:
        """Download <dest_dir>/<sha256> from the first provider that delivers the right bytes.

        Providers are PeerIDs (dialled via known addresses) or full multiaddrs. Each is tried in
        turn (least penalised first); a provider that dies mid-transfer, times out (no progress
        for `timeout` s) or sends bytes with the wrong hash is skipped and penalised. Raises
        TransferRefused if every provider refused, NoProviderError if all failed otherwise.
        With `cid` and an IPFS API configured, Kubo is asked for the CID when no peer delivers.
        """
        sha = sha256_hex.lower()
        dest_dir = Path(dest_dir)
        final = dest_dir / sha
        if final.is_file():
            return final
        limit = self.max_file_bytes if max_bytes is None else max_bytes
        wait = self.request_timeout if timeout is None else timeout
        candidates = self._order_providers(providers)
        failures: list[str] = []
        refusals = 0
        too_large = 0
        for pid, addrs in candidates:
            name = pid.to_base58()
            try:
                path = await self._fetch_one(pid, addrs, sha, dest_dir, limit, wait)
                if 0 < self._penalty.get(name, 0.0) < PENALTY_HOSTILE:
                    self._penalty[name] = 0.0  # it delivered: forget earlier outages
                return path
            except TooLarge as exc:
                too_large += 1
                failures.append(f"{name}: {exc}")
                log.info("%s", exc)
            except TransferRefused as exc:
                refusals += 1
                failures.append(f"{name}: {exc}")
                log.info("%s", exc)
            except (WrongHash, Oversize) as exc:
                failures.append(f"{name}: {exc}")
                self._penalise(name, PENALTY_HOSTILE, str(exc))
                too_large += isinstance(exc, Oversize)
            except trio.TooSlowError:
                failures.append(f"{name}: no progress for {wait:.0f} s")
                self._penalise(name, PENALTY_FAILED, "transfer timed out")
            except Exception as exc:
                failures.append(f"{name}: {exc!r}")
                self._penalise(name, PENALTY_FAILED, f"transfer failed: {exc!r}")
        if cid is not None and self.ipfs is not None:
            try:
                return await self._fetch_ipfs(sha, cid, dest_dir, limit)
            except (IpfsError, TransferError) as exc:
                failures.append(f"ipfs: {exc}")
        if failures and too_large == len(failures):
            raise FileTooLarge(f"{sha[:12]} is larger than the {limit} bytes allowed: " + "; ".join(failures))
        if not failures:
            raise NoProviderError(f"no provider known for {sha[:12]}; wait for announcements or pass peers")
        if refusals == len(failures):
            raise TransferRefused(f"every provider refused {sha[:12]}: " + "; ".join(failures))
        raise NoProviderError(f"could not fetch {sha[:12]} from any provider: " + "; ".join(failures))

    async def _fetch_ipfs(self, sha: str, cid: str, dest_dir: Path, max_bytes: int) -> Path:
        assert self.ipfs is not None
        tmp = dest_dir / f".{sha}.ipfs"
        try:
            await trio.to_thread.run_sync(self.ipfs.cat, cid, tmp, max_bytes)
            digest = await trio.to_thread.run_sync(_sha256_file, tmp)
            if digest != sha:
                raise WrongHash(f"IPFS content of {cid} hashes to {digest[:12]}, expected {sha[:12]}")
            final = dest_dir / sha
            os.replace(tmp, final)
            log.info("fetched %s from IPFS (%s)", sha[:12], cid)
            return final
        finally:
            tmp.unlink(missing_ok=True)

    def _order_providers(self, providers: Iterable[str]) -> list[tuple[ID, list[multiaddr.Multiaddr]]]:
        out: dict[ID, list[multiaddr.Multiaddr]] = {}
        for p in providers:
            try:
                if p.startswith("/"):
                    info = info_from_p2p_addr(_to_multiaddr(p))
                    out.setdefault(info.peer_id, []).extend(info.addrs)
                else:
                    out.setdefault(ID.from_base58(p), [])
            except Exception as exc:
                log.warning("ignoring provider %r: %s", p, exc)
        now = time.monotonic()
        me = self.host.get_id()
        ok = [
            (pid, addrs)
            for pid, addrs in out.items()
            if pid != me and self._banned_until.get(pid.to_base58(), 0.0) <= now
        ]
        return sorted(ok, key=lambda item: self._penalty.get(item[0].to_base58(), 0.0))

    async def _fetch_one(
        self,
        pid: ID,
        addrs: list[multiaddr.Multiaddr],
        sha: str,
        dest_dir: Path,
        max_bytes: int,
        timeout: float,
    ) -> Path:
        with trio.fail_after(timeout):
            if addrs:
                await self._dial_peer(pid, addrs)
            elif pid in self._keep:  # a member we know: re-dial it (through its relay if need be)
                await self._dial_peer(pid, self._keep[pid])
            stream = await self.host.new_stream(pid, [TProtocol(PROTOCOL_ID)])
        try:
            path = await fetch_from_stream(stream, sha, dest_dir, max_bytes, timeout)
        except BaseException:
            await _safe_reset(stream)
            raise
        await _safe_close(stream)
        log.info("fetched %s from %s", sha[:12], pid)
        return path


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _peer_info(pid: ID, addrs: list[multiaddr.Multiaddr]) -> PeerInfo:
    return PeerInfo(pid, addrs)


@functools.lru_cache(maxsize=4096)
def _address_of(peer_id: str) -> str:
    return address_from_peer_id(peer_id)


async def _refuse(stream: INetStream, status: str, reason: str) -> None:
    """Answer a stream with a refusal frame and close it, within a second (else reset it)."""
    with trio.move_on_after(1):
        try:
            await refuse(stream, status, reason)
            await stream.close()
            return
        except Exception:
            pass
    await _safe_reset(stream)


def _invalid_reason(msg: rpc_pb2.Message, sender: str, is_member: Callable[[str], bool]) -> str | None:
    try:
        a = Announcement.decode(msg.data)
    except MessageError as exc:
        return f"malformed: {exc}"
    if a.peer_id != sender:
        return f"announcement names peer {a.peer_id[:16]} but was signed by {sender}"
    try:
        address = _address_of(sender)
    except IdentityError as exc:
        return str(exc)
    try:
        member = bool(is_member(address))
    except Exception as exc:
        return f"is_member({address}) raised {exc!r}"
    return None if member else f"{address} is not a member"


async def _safe_reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2), suppress(Exception):
        await stream.reset()


async def _safe_close(stream: INetStream) -> None:
    with trio.move_on_after(2):
        with suppress(Exception):
            await stream.close()


async def _run_relay(service: RelayService, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run the circuit relay protocol (STOP always, HOP gated to members when serving)."""
    async with background_trio_service(service.protocol):
        await service.protocol.event_started.wait()
        if service.settings.serve:
            from p2p.relay import HOP_PROTOCOL_ID

            service.host.set_stream_handler(HOP_PROTOCOL_ID, service._gated_hop)
        if service.dcutr is None:
            task_status.started()
            await trio.sleep_forever()
        async with background_trio_service(service.dcutr), trio.open_nursery() as nursery:
            await service.dcutr.event_started.wait()
            nursery.start_soon(service.watch_upgrades)
            task_status.started()
            await trio.sleep_forever()


@asynccontextmanager
async def open_host(
    private_key: bytes,
    listen_addrs: Iterable[str],
    topic: str,
    is_member: Callable[[str], bool],
    may_serve: Callable[[str, str], bool],
    store_dir: Path,
    max_file_bytes: int = 1 << 30,
    bootstrap: Iterable[str] = (),
    request_timeout: float = 30.0,
    reconnect_interval: float = 5.0,
    gossip: GossipSettings | None = None,
    ipfs_api_url: str | None = None,
    limits: FloodLimits | None = None,
    relay: RelaySettings | None = None,
) -> AsyncIterator[MedfedHost]:
    """Start a host on the wallet key (TCP + Noise + Yamux), join `topic`, serve the transfer protocol.

    `is_member(address)` and `may_serve(address, sha256_hex)` are called on the event loop for every
    message/request: keep them fast (cached answers, no network I/O). `bootstrap` multiaddrs are
    dialled at start (failures logged) and re-dialled whenever they drop. With `ipfs_api_url`
    (a Kubo RPC address) `fetch(..., cid=...)` falls back to IPFS when no peer can serve.
    `limits` bound what one peer may cost us (gossip rates, streams served; see p2p/limits.py).
    `relay` (p2p/relay.py): relay members' traffic, and/or accept no inbound connection and be
    reached through relays; None = dial relayed addresses only.
    """
    settings = gossip or GossipSettings()
    wire.install()  # larger Yamux frames, batched Noise writes, enforced receive window
    _raise_pubsub_queue_limits(settings.queue_size)
    key_pair = key_pair_from_private_key(private_key)
    maddrs = [_to_multiaddr(a) for a in listen_addrs]
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=maddrs,
    )
    gossipsub = GuardedGossipSub(
        protocols=[MESHSUB_1_1, MESHSUB_1_0],
        degree=settings.degree,
        degree_low=settings.degree_low,
        degree_high=settings.degree_high,
        heartbeat_interval=settings.heartbeat_interval,
        max_messages_per_topic_per_second=settings.max_messages_per_second,
        max_pending_messages_per_peer=settings.max_pending_messages_per_peer,
    )
    pubsub = GuardedPubsub(host, gossipsub, strict_signing=True)
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    node = MedfedHost(
        host,
        pubsub,
        gossipsub,
        topic,
        is_member,
        may_serve,
        store_dir,
        max_file_bytes,
        request_timeout,
        reconnect_interval,
        KuboClient(ipfs_api_url) if ipfs_api_url else None,
        limits,
    )
    pubsub.attach(node.guard)
    gossipsub.guard = node.guard
    host.set_stream_handler(TProtocol(PROTOCOL_ID), node._handle_stream)
    pubsub.set_topic_validator(topic, node._validate, False)
    failure: BaseException | None = None
    async with (
        host.run(listen_addrs=maddrs),
        trio.open_nursery() as nursery,
        background_trio_service(pubsub),
        background_trio_service(gossipsub),
    ):
        await pubsub.wait_until_ready()
        relay_settings = relay or RelaySettings()
        node.relay = RelayService(host, relay_settings, is_member)
        await nursery.start(_run_relay, node.relay)
        if relay_settings.private:
            nursery.start_soon(node.relay.keep_reservations, node._relay_candidates, node._connect_relay)
        subscription = await pubsub.subscribe(topic)
        nursery.start_soon(node._read_gossip, subscription)
        nursery.start_soon(node._reconnect_loop)
        nursery.start_soon(node._log_drops)
        boot = list(bootstrap)
        if boot:
            try:
                await node.connect(boot, keep=True)
            except ConnectError as exc:
                log.warning("%s (will keep retrying)", exc)
        log.info("p2p host %s (%s) on %s", node.peer_id, node.address, node.listen_multiaddrs())
        try:
            yield node
        except BaseException as exc:
            failure = exc
            raise
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:  # libp2p's service managers swallow what the body raised: not ours
        raise failure
