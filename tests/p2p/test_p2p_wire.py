"""p2p/wire.py against real hosts: a peer that ignores Yamux flow control is reset, not buffered."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.id import ID
from p2p_hosts import new_key, running_hosts, write_random

from p2p import wire
from p2p.errors import TransferError
from p2p.framing import FramedReader
from p2p.transfer import PROTOCOL_ID

YAMUX_DATA = 0x0


def test_a_peer_sending_past_the_receive_window_gets_its_stream_reset(tmp_path: Path) -> None:
    """py-libp2p 0.8.1 logs a peer that sends past the window it was granted (256 KiB on a new
    stream) and buffers the bytes anyway; with wire.py the stream is reset and nothing is kept.
    The hostile peer is a real host writing one Yamux DATA frame 1 MiB larger than its window straight to the
    connection, past its own flow control."""
    src = tmp_path / "u"
    sha = write_random(src, 100_000)

    async def main() -> None:
        async with running_hosts([new_key(), new_key()], tmp_path) as (victim, hostile):
            victim.serve(sha, src)
            await hostile.connect(victim.listen_multiaddrs())
            before = wire.window_violations
            stream = await hostile.host.new_stream(ID.from_base58(victim.peer_id), [TProtocol(PROTOCOL_ID)])
            muxed: Any = stream.muxed_stream  # type: ignore[attr-defined]  # the YamuxStream
            # 1 MiB past the window the victim granted (it grows it as the stream is used); the
            # bytes start with a zero-length request frame
            flood = bytes(muxed.send_window + (1 << 20))
            header = struct.pack("!BBHII", 0, YAMUX_DATA, 0, muxed.stream_id, len(flood))
            await muxed.conn._write_frame(header + flood)
            # reset: no answer (py-libp2p drops a reset stream with nothing buffered, so the
            # read may see the end of the stream rather than the reset); unpatched: "bad_request"
            with trio.fail_after(10), pytest.raises((StreamReset, TransferError), match=r"reset|closed"):
                await FramedReader(stream).read_frame()
            assert wire.window_violations == before + 1
            [conn] = victim.host.get_network().get_connections(ID.from_base58(hostile.peer_id))
            buffers: dict[int, Any] = conn.muxed_conn.stream_buffers  # type: ignore[attr-defined]
            assert sum(len(b) for b in buffers.values()) == 0
            # the connection itself stays up and serves honest requests
            out = await hostile.fetch(sha, [victim.peer_id], tmp_path / "dl", 10**6, timeout=10)
            assert out.read_bytes() == src.read_bytes()

    trio.run(main)


def test_another_py_libp2p_version_is_refused_with_the_fix_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """wire.py replaces copies of 0.8.1's functions: on another version it must not run silently."""
    monkeypatch.setattr(wire, "_installed", False)
    monkeypatch.setattr(wire, "version", lambda name: "0.9.0")
    with pytest.raises(wire.WireError, match=r"targets py-libp2p 0\.8\.1, found 0\.9\.0.*MEDFED_WIRE=off"):
        wire.install()


def test_the_chunk_buffer_behaves_like_the_bytearray_it_replaces() -> None:
    """Yamux's receive buffer: the operations py-libp2p applies give what a bytearray gives."""
    import random

    rng = random.Random(7)
    ours, ref = wire._ChunkBuffer(), bytearray()
    for _ in range(2000):
        op = rng.random()
        if op < 0.5:
            data = rng.randbytes(rng.choice([0, 1, 12, 1000, 70_000]))
            ours.extend(data)
            ref.extend(data)
        elif op < 0.9:
            n = rng.choice([0, 1, 5, 65_536, 300_000, len(ref)])
            assert bytes(ours[:n]) == bytes(ref[:n])
            del ours[:n]
            del ref[:n]
        elif op < 0.95:
            assert bytes(ours) == bytes(ref)
        else:
            ours.clear()
            ref.clear()
        assert len(ours) == len(ref) and bool(ours) == bool(ref)
    with pytest.raises(TypeError):
        ours[1:3]
