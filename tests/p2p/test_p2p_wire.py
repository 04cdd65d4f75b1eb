"""p2p/wire.py against real hosts: a peer that ignores Yamux flow control is reset, not buffered."""

from __future__ import annotations

import struct
from pathlib import Path

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
            muxed = stream.muxed_stream
            # 1 MiB past the window the victim granted (it grows it as the stream is used); the
            # bytes start with a zero-length request frame
            flood = bytes(muxed.send_window + (1 << 20))  # type: ignore[attr-defined]
            header = struct.pack("!BBHII", 0, YAMUX_DATA, 0, muxed.stream_id, len(flood))  # type: ignore[attr-defined]
            await muxed.conn._write_frame(header + flood)  # type: ignore[attr-defined]
            # reset: no answer (py-libp2p drops a reset stream with nothing buffered, so the
            # read may see the end of the stream rather than the reset); unpatched: "bad_request"
            with trio.fail_after(10), pytest.raises((StreamReset, TransferError), match=r"reset|closed"):
                await FramedReader(stream).read_frame()
            assert wire.window_violations == before + 1
            [conn] = victim.host.get_network().get_connections(ID.from_base58(hostile.peer_id))
            assert sum(len(b) for b in conn.muxed_conn.stream_buffers.values()) == 0  # type: ignore[attr-defined]
            # the connection itself stays up and serves honest requests
            out = await hostile.fetch(sha, [victim.peer_id], tmp_path / "dl", 10**6, timeout=10)
            assert out.read_bytes() == src.read_bytes()

    trio.run(main)
