"""Faster, stricter TCP + Noise + Yamux for py-libp2p 0.8.1 (installed by `open_host`).

py-libp2p 0.8.1 moves a bulk transfer in small pieces, each costing Python work and a syscall:

* Yamux (``YamuxStream.write``) cuts every write into DATA frames of at most 64 KiB, and when
  the peer's window is used up it polls it every 10 ms (``trio.sleep(0.01)``);
* Noise (``BaseNoiseMsgReadWriter.write_msg``) cuts a write into messages of at most 65519
  plaintext bytes (the Noise limit) and hands each to the socket in a write of its own; its
  reader takes each message with two socket reads (the 2-byte length, then the body);
* Yamux keeps each stream's received bytes in a bytearray appended at the end and cut at the
  front: CPython copies it whole whenever it outgrows its allocation or shrinks below half of
  it, and with windows of megabytes (py-libp2p grows them up to 16 MiB) that was the largest
  CPU cost of receiving;
* a Yamux frame body is read through the secure session and ``read_exactly``, which between
  them copy every received byte four times (bytearray, bytes, bytearray, bytes);
* Yamux's receive window is counted but not enforced: a peer that sends past it is only logged,
  and its bytes are buffered all the same.

`install()` replaces those few functions, in place, for every host in the process:

* Yamux DATA frames of up to ``MAX_FRAME`` (256 KiB, the initial window; + ``FRAME_SLACK``
  rather than leave a runt), never more than the peer's window, so any Yamux peer accepts them;
  a writer waiting for window sleeps on an event that a window update (or the stream closing)
  sets, not on a 10 ms poll; a stream's received bytes are a queue of frames (`_ChunkBuffer`);
  a frame body is joined once from the Noise messages and handed on as it is;
* Noise encrypts all the messages of one write and hands them to the socket in ONE write; its
  transport reader (after the handshake) reads up to ``RECV_CHUNK`` bytes at a time and cuts
  messages out of its buffer;
* a DATA frame that takes a stream past the receive window we granted resets that stream (RST
  to the peer, its buffered bytes dropped; ``window_violations`` counts them).

Nothing changes on the wire format: the frames and messages are those of the specs, only larger
and fewer. The replaced functions are copies of 0.8.1's with those changes, so `install()`
refuses (`WireError`) any other py-libp2p version, and checks that every attribute it replaces
exists. ``MEDFED_WIRE=off`` in the environment leaves py-libp2p as it is (benchmark baseline).
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from importlib.metadata import version
from typing import Any

import trio
from libp2p.io import utils as io_utils
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.security import secure_session
from libp2p.security.noise import io as noise_io
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux

from p2p.errors import WireError

log = logging.getLogger(__name__)

TARGET_LIBP2P = "0.8.1"
MAX_FRAME = 256 * 1024  # Yamux DATA frame size we cut writes into (the initial window)
# the last piece of a write, when this small, rides in the frame before it: on a relayed
# connection a 256 KiB inner frame becomes 256 KiB + 84 bytes of Noise messages, which would
# otherwise cost an outer frame (and socket write) of its own for 84 bytes
FRAME_SLACK = 4096
RECV_CHUNK = 256 * 1024  # socket read size of the Noise transport reader
WINDOW_WAIT_S = 5.0  # as py-libp2p: a write fails after this long without window

window_violations = 0  # streams reset because the peer sent past our receive window
window_waits = 0  # writes that found the peer's window used up and waited for an update

_installed = False

# (owner, attribute) pairs install() replaces or relies on: all must exist in the target version
_SEAMS: tuple[tuple[object, str], ...] = (
    (yamux.YamuxStream, "write"),
    (yamux.YamuxStream, "__init__"),
    (yamux.Yamux, "_write_frame"),
    (yamux.Yamux, "__init__"),
    (yamux, "YAMUX_HEADER_FORMAT"),
    (yamux, "TYPE_DATA"),
    (yamux, "TYPE_WINDOW_UPDATE"),
    (yamux, "FLAG_RST"),
    (yamux, "HEADER_SIZE"),
    (noise_io.NoiseTransportReadWriter, "__init__"),
    (noise_io.BaseNoiseMsgReadWriter, "write_msg"),
    (noise_io, "MAX_PLAINTEXT_LENGTH"),
    (noise_io, "MAX_NOISE_MESSAGE_LEN"),
    (noise_io, "NoisePacketReadWriter"),
    (yamux, "read_exactly"),
    (secure_session.SecureSession, "read"),
)


def enabled() -> bool:
    """Whether the environment allows the patch (``MEDFED_WIRE=off`` turns it off)."""
    return os.environ.get("MEDFED_WIRE", "on").strip().lower() not in ("off", "0", "no", "false")


def installed() -> bool:
    """Whether `install()` has patched py-libp2p in this process."""
    return _installed


def install() -> bool:
    """Patch py-libp2p's Yamux and Noise (see the module docstring); idempotent.

    Returns False (nothing changed) under ``MEDFED_WIRE=off``. Raises `WireError` on a py-libp2p
    other than 0.8.1 or when an attribute to replace is missing."""
    global _installed
    if _installed:
        return True
    if not enabled():
        log.info("MEDFED_WIRE=off: py-libp2p's own Yamux and Noise I/O are used")
        return False
    found = version("libp2p")
    missing = [f"{getattr(o, '__name__', o)}.{a}" for o, a in _SEAMS if not hasattr(o, a)]
    if found != TARGET_LIBP2P or missing:
        raise WireError(
            f"p2p/wire.py targets py-libp2p {TARGET_LIBP2P}, found {found}"
            + (f" without {', '.join(missing)}" if missing else "")
            + ": install libp2p==0.8.1, or port p2p/wire.py to the new version "
            "(or run with MEDFED_WIRE=off)"
        )
    _patch_yamux()
    _patch_reads()
    _patch_noise()
    _installed = True
    return True


# ---------------------------------------------------------------------------------- Yamux
def _window_event(stream: Any) -> trio.Event:
    ev: trio.Event | None = stream.__dict__.get("_wire_window_event")
    if ev is None:
        ev = stream.__dict__["_wire_window_event"] = trio.Event()
    return ev


def _wake(stream: Any) -> None:
    ev = stream.__dict__.pop("_wire_window_event", None)
    if ev is not None:
        ev.set()


def _get_send_window(stream: Any) -> int:
    return int(stream.__dict__["_wire_send_window"])


def _set_send_window(stream: Any, value: int) -> None:
    old = stream.__dict__.get("_wire_send_window", 0)
    stream.__dict__["_wire_send_window"] = value
    if value > old:  # a window update arrived: wake a writer waiting for it
        _wake(stream)


def _get_closed(stream: Any) -> bool:
    return bool(stream.__dict__.get("_wire_closed", False))


def _set_closed(stream: Any, value: bool) -> None:
    stream.__dict__["_wire_closed"] = value
    if value:
        _wake(stream)


def _get_recv_window(stream: Any) -> int:
    return int(stream.__dict__["_wire_recv_window"])


def _set_recv_window(stream: Any, value: int) -> None:
    """py-libp2p subtracts each DATA frame's length here (holding the connection's streams
    lock) and, when the result is negative, only logs and clamps it to 0. Below 0 the peer sent
    past the window we granted: drop what it buffered and reset the stream."""
    if value < 0 and "_wire_recv_window" in stream.__dict__ and not stream.reset_received:
        _reset_for_window(stream, -value)
    stream.__dict__["_wire_recv_window"] = value


def _reset_for_window(stream: Any, excess: int) -> None:
    global window_violations
    window_violations += 1
    conn = stream.conn
    log.warning(
        "yamux: peer %s sent %d bytes past the receive window on stream %d: stream reset",
        conn.peer_id,
        excess,
        stream.stream_id,
    )
    buf = conn.stream_buffers.get(stream.stream_id)
    if buf is not None:
        buf.clear()  # the reader gets the reset, not the flood
    stream.recv_closed = True
    stream.send_closed = True
    stream.reset_received = True
    stream.closed = True
    rst = struct.pack(
        yamux.YAMUX_HEADER_FORMAT, 0, yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_RST, stream.stream_id, 0
    )
    nursery = getattr(conn, "_nursery", None)
    if nursery is not None:  # we hold the streams lock here: send the RST from its own task
        nursery.start_soon(_send_quietly, conn, rst)


async def _send_quietly(conn: Any, frame: bytes) -> None:
    try:
        await conn._write_frame(frame)
    except Exception as exc:  # the connection went away: nothing to tell
        log.debug("yamux: RST not sent: %r", exc)


async def _yamux_write(self: Any, data: bytes) -> None:
    """YamuxStream.write of py-libp2p 0.8.1 with frames up to MAX_FRAME and an event wait."""
    if self.send_closed:
        raise MuxedStreamError("Stream is closed for sending")
    total = len(data)
    sent = 0
    while sent < total:
        frame: bytes | None = None
        wake: trio.Event | None = None
        async with self.rw_lock.write_lock():
            if self.send_closed:
                raise MuxedStreamError("Stream is closed for sending")
            async with self.window_lock:
                if self.closed:
                    raise MuxedStreamError("Stream is closed")
                if self.send_window > 0:
                    n = min(self.send_window, total - sent)
                    if n > MAX_FRAME + FRAME_SLACK:
                        n = MAX_FRAME
                    self.send_window -= n
                    header = struct.pack(yamux.YAMUX_HEADER_FORMAT, 0, yamux.TYPE_DATA, 0, self.stream_id, n)
                    frame = b"".join((header, memoryview(data)[sent : sent + n]))  # one copy
                else:
                    wake = _window_event(self)  # taken under the lock: no update is missed
        if frame is None:
            assert wake is not None
            global window_waits
            window_waits += 1
            self._zero_window_waits += 1
            with trio.move_on_after(WINDOW_WAIT_S) as scope:
                await wake.wait()
            if scope.cancelled_caught:
                raise MuxedStreamError("Timed out waiting for window update after 5 seconds.")
            continue
        await self.conn._write_frame(frame)
        sent += len(frame) - yamux.HEADER_SIZE


async def _yamux_write_frame(self: Any, data: bytes) -> None:
    """Yamux._write_frame without its per-frame debug formatting (done even when not logged)."""
    async with self._write_lock:
        await self.secured_conn.write(data)
    await trio.lowlevel.checkpoint()


class _ChunkBuffer:
    """A Yamux stream's receive buffer as a queue of the frames' bytes (stands in for the
    bytearray py-libp2p uses, with the operations it applies: extend, len, bool, bytes(), [:n],
    del [:n], clear). A bytearray appended at the end and cut at the front is copied whole
    whenever it grows past its allocation or shrinks below half of it: with a window of
    megabytes that was the largest CPU cost of receiving."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def extend(self, data: bytes | bytearray) -> None:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0

    def __bytes__(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    def _prefix_len(self, key: slice) -> int:
        start, stop, step = key.indices(self._size)
        if start != 0 or step != 1:
            raise TypeError("a Yamux stream buffer supports [:n] only")
        return max(stop, 0)

    def __getitem__(self, key: slice) -> bytes:
        need = self._prefix_len(key)
        parts = []
        for chunk in self._chunks:
            if need <= 0:
                break
            part = chunk if len(chunk) <= need else chunk[:need]
            parts.append(part)
            need -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __delitem__(self, key: slice) -> None:
        n = self._prefix_len(key)
        self._size -= n
        while n:
            chunk = self._chunks[0]
            if len(chunk) <= n:
                self._chunks.popleft()
                n -= len(chunk)
            else:
                self._chunks[0] = chunk[n:]
                n = 0


class _StreamBuffers(dict[int, Any]):
    """Yamux.stream_buffers: every bytearray py-libp2p stores becomes a `_ChunkBuffer`."""

    def __setitem__(self, key: int, value: Any) -> None:
        if isinstance(value, bytearray):
            buf = _ChunkBuffer()
            buf.extend(value)
            value = buf
        super().__setitem__(key, value)


_original_yamux_init = yamux.Yamux.__init__


def _yamux_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_yamux_init(self, *args, **kwargs)
    self.stream_buffers = _StreamBuffers()


def _patch_yamux() -> None:
    cls = yamux.YamuxStream
    cls.send_window = property(_get_send_window, _set_send_window)  # type: ignore[assignment]
    cls.recv_window = property(_get_recv_window, _set_recv_window)  # type: ignore[assignment]
    cls.closed = property(_get_closed, _set_closed)  # type: ignore[assignment]
    cls.write = _yamux_write  # type: ignore[method-assign]
    yamux.Yamux._write_frame = _yamux_write_frame  # type: ignore[method-assign]
    yamux.Yamux.__init__ = _yamux_init  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------- reads
# A Yamux frame body is read with read_exactly(secure session, n): py-libp2p's session joins the
# Noise messages into a bytearray and copies it to bytes, and read_exactly copies the result into
# a bytearray and to bytes again (four passes over every received byte besides decryption). Ours
# join once, and hand a complete read on as it is.


async def _read_exactly(reader: Any, n: int, retry_count: int = io_utils.DEFAULT_RETRY_READ_COUNT) -> bytes:
    """libp2p.io.utils.read_exactly, returning a complete first read without copying it."""
    data = await reader.read(n)
    if len(data) == n and isinstance(data, bytes):
        return data
    buffer = bytearray(data)
    for _ in range(retry_count):
        if len(buffer) >= n:
            return bytes(buffer)
        buffer.extend(await reader.read(n - len(buffer)))
    if len(buffer) >= n:
        return bytes(buffer)
    raise IncompleteReadError(
        f"Connection closed during read operation: expected {n} bytes but received {len(buffer)} bytes",
        expected_bytes=n,
        received_bytes=len(buffer),
    )


async def _session_read(self: Any, n: int | None = None) -> bytes:
    """SecureSession.read: up to n bytes (None: what is buffered, else one message), the rest of
    a message kept for the next read; ConnectionClosedError when the connection ends first."""
    if n == 0:
        return b""
    st = self.__dict__
    buf: bytes = st.get("_wire_rbuf", b"")
    pos: int = st.get("_wire_rpos", 0)
    parts: list[bytes] = []
    have = len(buf) - pos
    if have > 0:
        if n is not None and n < have:
            st["_wire_rpos"] = pos + n
            return buf[pos : pos + n]
        st["_wire_rbuf"], st["_wire_rpos"] = b"", 0
        rest = buf[pos:]
        if n is None or n == have:
            return rest
        parts.append(rest)
        need = n - have
    elif n is None:
        msg = await self.conn.read_msg()
        if msg == b"":
            raise ConnectionClosedError("Connection closed")
        return bytes(msg)
    else:
        need = n
    while need > 0:
        msg = await self.conn.read_msg()
        if msg == b"":
            if parts:
                break
            raise ConnectionClosedError("Connection closed")
        if len(msg) <= need:
            parts.append(msg)
            need -= len(msg)
        else:
            parts.append(msg[:need])
            st["_wire_rbuf"], st["_wire_rpos"] = bytes(msg), need
            need = 0
    return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)


def _patch_reads() -> None:
    yamux.read_exactly = _read_exactly
    secure_session.SecureSession.read = _session_read  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------- Noise
class _BufferedPacketReader(noise_io.NoisePacketReadWriter):
    """Noise transport messages (2-byte length + body) cut out of reads of RECV_CHUNK bytes."""

    def __init__(self, read_write_closer: Any) -> None:
        super().__init__(read_write_closer)
        self._buf = b""
        self._pos = 0  # start of the unread bytes in _buf

    async def _need(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            have = len(self._buf) - self._pos
            chunk = await self.read_write_closer.read(max(RECV_CHUNK, n - have))
            if not chunk:
                raise IncompleteReadError(
                    f"Connection closed during read operation: expected {n} bytes but received {have} bytes",
                    expected_bytes=n,
                    received_bytes=have,
                )
            self._buf = self._buf[self._pos :] + chunk if have else chunk
            self._pos = 0

    async def read_msg(self) -> bytes:
        await self._need(2)
        start = self._pos + 2
        n = int.from_bytes(self._buf[self._pos : start], "big")
        await self._need(2 + n)
        start = self._pos + 2
        self._pos = start + n
        return self._buf[start : self._pos]


_original_transport_init = noise_io.NoiseTransportReadWriter.__init__


def _transport_init(self: Any, conn: Any, noise_state: Any) -> None:
    """After the handshake (whose reader must not read ahead): the buffered packet reader."""
    _original_transport_init(self, conn, noise_state)
    self.read_writer = _BufferedPacketReader(conn)


async def _noise_write_msg(self: Any, msg: bytes, prefix_encoded: bool = False) -> None:
    """BaseNoiseMsgReadWriter.write_msg with every message of one write in one socket write."""
    limit = noise_io.MAX_PLAINTEXT_LENGTH
    if len(msg) <= limit:
        enc = self.encrypt(msg)
        if prefix_encoded:
            enc = self.prefix + enc
        await self.read_writer.write_msg(enc)
        return
    parts = []
    for start in range(0, len(msg), limit):
        enc = self.encrypt(msg[start : start + limit])
        if prefix_encoded and start == 0:
            enc = self.prefix + enc
        if len(enc) > noise_io.MAX_NOISE_MESSAGE_LEN:
            raise ValueError(f"Noise message of {len(enc)} bytes")  # as encode_msg would
        parts.append(len(enc).to_bytes(2, "big"))
        parts.append(enc)
    await self.read_writer.read_write_closer.write(b"".join(parts))


def _patch_noise() -> None:
    noise_io.NoiseTransportReadWriter.__init__ = _transport_init  # type: ignore[method-assign]
    noise_io.BaseNoiseMsgReadWriter.write_msg = _noise_write_msg  # type: ignore[method-assign]
