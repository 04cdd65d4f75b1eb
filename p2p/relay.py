"""Circuit relay v2 for members that accept no inbound connection (hospital firewalls).

py-libp2p 0.8.1's `libp2p.relay.circuit_v2` does the wire protocol (HOP on the relay, STOP on
the destination); this module decides who may use it and when:

* a relay (``RelaySettings.serve``: ``[p2p] relay = true``, or `medfed-node relay`) accepts HOP
  requests (reservations and circuits) from members only, within ``RelayLimits``;
* a private member (``reachability = "private"``) keeps a reservation on every relay it can
  reach (the configured ``relays``, and each member it holds a direct connection to that turns
  out to serve HOP) and advertises ``<relay>/p2p-circuit/p2p/<itself>`` instead of its
  unreachable listen addresses;
* anyone dials a ``/p2p-circuit`` address through its relay. The relayed byte stream is then
  upgraded like a TCP one (Noise with the destination's key, Yamux), so the relay forwards
  ciphertext it cannot read or alter, and the destination is authenticated as its member key.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.constants import MAX_READ_LEN

from p2p import wire
from p2p.identity import address_from_peer_id

log = logging.getLogger(__name__)


class CircuitRelayProtocol(CircuitV2Protocol):
    """py-libp2p's circuit v2 protocol with a data pump that tears down only its own circuit.

    py-libp2p 0.8.1's ``_relay_data`` ends a direction by closing the streams it finds under
    ``_active_relays[peer]``, a registry keyed by the *destination* peer id: with two circuits to
    one destination (a second fetcher, a re-dial), the end of the older circuit closes the newer
    one's streams and resets its transfer mid-way. This pump closes the streams it was given.
    """

    async def _relay_data(
        self,
        src_stream: INetStream,
        dst_stream: INetStream,
        peer_id: ID,
        deadline: float | None = None,
        circuit_data_limit: list[int] | None = None,
    ) -> None:
        """Copy src to dst until src ends (then half-close dst) or fails (then reset both)."""
        failed = False
        # with p2p/wire.py's 256 KiB Yamux frames a read takes a whole frame (py-libp2p's own
        # 64 KiB frames: its MAX_READ_LEN, larger reads measured no faster there)
        read_len = PUMP_READ if wire.installed() else MAX_READ_LEN
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    log.info("relay: circuit for %s reached its duration limit", peer_id)
                    failed = True
                    return
                try:
                    data = await src_stream.read(read_len)
                except Exception as exc:  # reset, or the connection under it went away
                    log.debug("relay: circuit read for %s ended: %r", peer_id, exc)
                    failed = True
                    return
                if not data:
                    return  # EOF: the source closed its write side
                if circuit_data_limit is not None:
                    if len(data) > circuit_data_limit[0]:
                        log.info("relay: circuit for %s reached its data limit", peer_id)
                        failed = True
                        return
                    circuit_data_limit[0] -= len(data)
                try:
                    with trio.fail_after(self.write_timeout):
                        await dst_stream.write(data)
                except Exception as exc:
                    log.debug("relay: circuit write for %s ended: %r", peer_id, exc)
                    failed = True
                    return
        finally:
            with trio.CancelScope(shield=True):
                if failed:
                    for stream in (src_stream, dst_stream):
                        with contextlib.suppress(Exception):
                            await stream.reset()
                else:
                    with contextlib.suppress(Exception), trio.move_on_after(self.close_timeout):
                        await dst_stream.close()
                for key, pair in list(self._active_relays.items()):
                    if src_stream in pair or dst_stream in pair:
                        del self._active_relays[key]


CIRCUIT = "/p2p-circuit"
PUMP_READ = wire.MAX_FRAME + wire.FRAME_SLACK  # relay pump read size with p2p/wire.py: a frame
RESERVE_EVERY_S = 60.0  # renew reservations (and try new relays) this often
REFUSED_RETRY_S = 600.0  # a peer that refused HOP (no relay) is asked again after this


@dataclass(frozen=True)
class RelaySettings:
    """What this host does with circuit relay v2 ([p2p] relay, reachability, relays, limits)."""

    serve: bool = False  # relay members' traffic (HOP)
    private: bool = False  # accept no inbound connection: reserve on relays, advertise circuits
    relays: tuple[str, ...] = ()  # relay multiaddrs (/ip4/../tcp/../p2p/<id>) to reserve on
    max_reservations: int = 32  # members holding a reservation on us at once
    max_circuits: int = 16  # circuits open at once towards one reserved member
    circuit_mb: int = 4096  # bytes one circuit may carry (both directions), then it is reset
    circuit_s: int = 3600  # seconds one circuit may last, then it is reset (the dialer re-dials)
    hole_punch: bool = True  # DCUtR: try to replace a relayed connection by a direct one


def is_circuit(addr: str | multiaddr.Multiaddr) -> bool:
    """Whether a multiaddr goes through a relay."""
    return CIRCUIT in str(addr)


def is_relayed_conn(conn: object) -> bool:
    """Whether a swarm connection runs through a relay."""
    try:
        return any(is_circuit(a) for a in conn.get_transport_addresses())  # type: ignore[attr-defined]
    except Exception:
        return False


def circuit_addr(relay_addr: str, peer_id: str) -> str:
    """``<relay addr>/p2p-circuit/p2p/<peer_id>`` (relay_addr ends in /p2p/<relay id>)."""
    return f"{relay_addr.rstrip('/')}{CIRCUIT}/p2p/{peer_id}"


class RelayService:
    """The circuit relay v2 roles of one host (create with `open_relay`)."""

    def __init__(self, host: IHost, settings: RelaySettings, is_member: Callable[[str], bool]) -> None:
        self.host = host
        self.settings = settings
        self.is_member = is_member
        limits = RelayLimits(
            duration=settings.circuit_s,
            data=settings.circuit_mb * 1_000_000,
            max_circuit_conns=settings.max_circuits,
            max_reservations=settings.max_reservations,
        )
        roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if settings.serve else RelayRole(0))
        self.protocol = CircuitRelayProtocol(host, limits=limits, allow_hop=settings.serve)
        # enable_client would make every dial first ask for a reservation: we reserve ourselves
        config = RelayConfig(roles=roles & ~RelayRole.CLIENT, limits=limits)
        self.transport = CircuitV2Transport(host, self.protocol, config)
        self.reserved: dict[str, str] = {}  # relay peer id -> the relay's address we reserved through
        self._refused: dict[str, float] = {}  # peer id -> when it refused (not a relay)
        self.changed = trio.Event()  # set whenever `reserved` changes (then replaced)
        self.refused_hop = 0  # HOP requests refused to non-members (diagnostics, tests)
        # DCUtR (hole punching): on both ends of a relayed connection it tries a direct one
        # (py-libp2p drives it for every relayed connection); the relayed one stays if it fails
        self.dcutr = DCUtRProtocol(host) if settings.hole_punch else None
        self.punched: set[str] = set()  # peers reached directly after a relayed start (DCUtR)
        self._wake = trio.Event()

    # ---------------------------------------------------------------- relay (HOP) side
    async def _gated_hop(self, stream: INetStream) -> None:
        """HOP for members only; anything raised is logged (libp2p swallows handler errors)."""
        peer = stream.muxed_conn.peer_id.to_base58()
        try:
            member = bool(self.is_member(address_from_peer_id(peer)))
        except Exception as exc:  # IdentityError, or is_member failing
            log.info("relay: HOP from %s refused: %r", peer, exc)
            member = False
        if not member:
            self.refused_hop += 1
            log.info("relay: HOP from %s refused: not a member", peer)
            with trio.move_on_after(2):
                await self.protocol._send_status(stream, StatusCode.PERMISSION_DENIED, "members only")
            await _reset(stream)
            return
        try:
            await self.protocol._handle_hop_stream(stream)
        except Exception as exc:
            log.warning("relay: HOP stream from %s failed: %r", peer, exc)
            await _reset(stream)

    # ---------------------------------------------------------------- dialling
    async def dial(self, addr: str) -> None:
        """Open a relayed connection to ``/.../p2p/<relay>/p2p-circuit/p2p/<peer>``; it is then
        upgraded (Noise with the peer's key, Yamux) and held by the swarm like a direct one."""
        await self.transport.dial(multiaddr.Multiaddr(addr))

    # ---------------------------------------------------------------- private side
    def circuit_addrs(self, peer_id: str) -> list[str]:
        """Our addresses through every relay holding a reservation for us."""
        return [circuit_addr(a, peer_id) for a in sorted(self.reserved.values())]

    async def reserve(self, relay_id: str, relay_addr: str) -> bool:
        """Ask one relay (already connected) for a reservation; True when it granted one."""
        pid = ID.from_base58(relay_id)
        try:
            with trio.fail_after(15):
                stream = await self.host.new_stream(pid, [HOP_PROTOCOL_ID])
                try:
                    ok = await self.transport._make_reservation(stream, pid)
                finally:
                    await _close(stream)
        except Exception as exc:
            log.debug("relay %s: no reservation: %r", relay_id, exc)
            ok = False
        if ok:
            if self.reserved.get(relay_id) != relay_addr:
                log.info("reserved a relayed address at %s", relay_addr)
                self.reserved[relay_id] = relay_addr
                self._changed()
        else:
            self._refused[relay_id] = time.monotonic()
            if self.reserved.pop(relay_id, None) is not None:
                log.warning("relay %s no longer holds our reservation", relay_addr)
                self._changed()
        return ok

    async def keep_reservations(
        self, candidates: Callable[[], Iterable[tuple[str, str]]], connect: Callable[[str], object]
    ) -> None:
        """Forever: hold a reservation on every reachable relay.

        ``candidates()`` yields (peer id, direct address ending in /p2p/<id>) of peers we reach
        directly (members that may relay); the configured relays come first and are dialled
        with ``connect(addr)``."""
        while True:
            now = time.monotonic()
            seen: set[str] = set()
            for addr in self.settings.relays:
                rid = addr.rsplit("/p2p/", 1)[-1]
                seen.add(rid)
                try:
                    await connect(addr)  # type: ignore[misc]
                except Exception as exc:
                    log.info("relay %s unreachable: %r", addr, exc)
                    continue
                await self.reserve(rid, addr)
            for rid, addr in list(candidates()):
                if rid in seen or now - self._refused.get(rid, -REFUSED_RETRY_S) < REFUSED_RETRY_S:
                    continue
                seen.add(rid)
                await self.reserve(rid, addr)
            for rid in [r for r in self.reserved if r not in seen]:
                self.reserved.pop(rid)
                self._changed()
            with trio.move_on_after(RESERVE_EVERY_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def watch_upgrades(self) -> None:
        """Log each peer whose relayed connection hole punching (DCUtR) joined with a direct one;
        their ids are kept in ``punched``."""
        relayed: set[str] = set()
        while True:
            await trio.sleep(1.0)
            for pid in self.host.get_connected_peers():
                kinds = {is_relayed_conn(c) for c in self.host.get_network().get_connections(pid)}
                name = pid.to_base58()
                if kinds == {True}:
                    relayed.add(name)
                elif False in kinds and name in relayed:
                    relayed.discard(name)
                    self.punched.add(name)
                    log.info("hole punched: direct connection to %s (was relayed)", name)

    def poke(self) -> None:
        """Look for relays now (a new direct connection may be one)."""
        self._wake.set()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()


async def _close(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()
