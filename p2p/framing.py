"""Stream framing shared by the transfer protocol: uvarint-length-prefixed JSON headers."""

from __future__ import annotations

import json
from typing import Any, Protocol

from p2p.errors import TransferError

MAX_HEADER_BYTES = 4096


class ByteStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


def encode_uvarint(n: int) -> bytes:
    """Unsigned LEB128, as libp2p uses for length prefixes."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_frame(obj: dict[str, Any]) -> bytes:
    """uvarint(len) + canonical JSON."""
    body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    if len(body) > MAX_HEADER_BYTES:
        raise TransferError(f"header of {len(body)} bytes exceeds {MAX_HEADER_BYTES}")
    return encode_uvarint(len(body)) + body


class FramedReader:
    """Buffered reader over a libp2p stream: frames, exact byte counts, and EOF checks."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _read(self) -> bytes:
        """Up to 1 MiB from the stream; b'' at EOF."""
        from libp2p.network.stream.exceptions import StreamEOF

        try:
            return await self.stream.read(1 << 20)
        except StreamEOF:
            return b""

    async def _fill(self) -> bool:
        chunk = await self._read()
        if not chunk:
            return False
        self.buf += chunk
        return True

    async def read_uvarint(self) -> int:
        shift = value = 0
        i = 0
        while True:
            while i >= len(self.buf):
                if not await self._fill():
                    raise TransferError("peer closed the stream inside a length prefix")
            b = self.buf[i]
            value |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                del self.buf[:i]
                return value
            shift += 7
            if shift > 35:
                raise TransferError("length prefix too long")

    async def read_frame(self) -> dict[str, Any]:
        n = await self.read_uvarint()
        if n > MAX_HEADER_BYTES:
            raise TransferError(f"header of {n} bytes exceeds {MAX_HEADER_BYTES}")
        while len(self.buf) < n:
            if not await self._fill():
                raise TransferError("peer closed the stream inside a header")
        body = bytes(self.buf[:n])
        del self.buf[:n]
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TransferError(f"header is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise TransferError("header must be a JSON object")
        return obj

    async def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes (buffered first); b'' at EOF."""
        if not self.buf:
            chunk = await self._read()
            if len(chunk) <= limit:
                return chunk  # the common case of a body: no copy through the buffer
            self.buf += chunk
        out = bytes(self.buf[:limit])
        del self.buf[:limit]
        return out
