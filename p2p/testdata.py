"""Deterministic content shared by the CID vector generator (JS) and the tests (Python).

Chunk i (1 MiB) is the 8-byte big-endian index i followed by bytes(range(256)) repeated; the
stream is cut at `size`. Cheap to regenerate in both languages, and every chunk differs.
"""

from __future__ import annotations

from collections.abc import Iterator

CHUNK = 1 << 20
_BASE = bytes(range(256)) * (CHUNK // 256)


def pattern_chunks(size: int) -> Iterator[bytes]:
    """Yield the pattern stream of `size` bytes in pieces of at most 1 MiB."""
    i = 0
    left = size
    while left > 0:
        block = i.to_bytes(8, "big") + _BASE[8:]
        yield block[: min(left, CHUNK)]
        left -= CHUNK
        i += 1
