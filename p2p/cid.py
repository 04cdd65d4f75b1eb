"""CIDv1 of a file exactly as IPFS computes it with medfed's profile, in pure Python.

Profile (Kubo: `ipfs add --cid-version=1 --raw-leaves --chunker=size-1048576 --hash=sha2-256`;
js `ipfs-unixfs-importer`: rawLeaves, cidVersion 1, fixedSize 1048576, balanced layout with
maxChildrenPerNode 1024, reduceSingleLeafToSelf): the file is cut into 1 MiB chunks, each a
`raw` block; up to 1024 consecutive blocks hang off one dag-pb UnixFS `File` node, and those
nodes are grouped the same way, level by level, until one root remains. A file of one chunk
(including the empty file) is just that raw block.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from p2p.errors import CidError

CHUNK_SIZE = 1 << 20
MAX_LINKS = 1024
_RAW = 0x55
_DAG_PB = 0x70
_SHA2_256 = 0x12
_UNIXFS_FILE = 2


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _cid_bytes(codec: int, block: bytes) -> bytes:
    return b"\x01" + _uvarint(codec) + bytes([_SHA2_256, 32]) + hashlib.sha256(block).digest()


def cid_to_str(cid: bytes) -> str:
    """Multibase base32 (lowercase, unpadded, 'b' prefix), as IPFS prints CIDv1."""
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


@dataclass(frozen=True)
class _Entry:
    cid: bytes
    tsize: int  # serialized size of the block plus all blocks below it (dag-pb link Tsize)
    file_size: int  # bytes of file content below it (UnixFS blocksize)


def _field(tag: int, payload: bytes) -> bytes:
    return _uvarint(tag) + _uvarint(len(payload)) + payload


def _file_node(children: list[_Entry]) -> _Entry:
    # UnixFS Data: Type=File(1), filesize(3), blocksizes(4, one varint field per child, unpacked)
    data = b"\x08" + _uvarint(_UNIXFS_FILE)
    data += b"\x18" + _uvarint(sum(c.file_size for c in children))
    for c in children:
        data += b"\x20" + _uvarint(c.file_size)
    # dag-pb PBNode: Links(2) first, then Data(1); PBLink: Hash(1), Name(2) = "", Tsize(3)
    block = b"".join(
        _field(0x12, _field(0x0A, c.cid) + b"\x12\x00" + b"\x18" + _uvarint(c.tsize)) for c in children
    )
    block += _field(0x0A, data)
    return _Entry(
        _cid_bytes(_DAG_PB, block),
        len(block) + sum(c.tsize for c in children),
        sum(c.file_size for c in children),
    )


def cid_of_chunks(chunks: Iterable[bytes]) -> str:
    """CID of content given as consecutive pieces (any sizes; re-cut into 1 MiB chunks)."""
    levels: list[list[_Entry]] = [[]]
    counts: list[int] = [0]

    def push(level: int, entry: _Entry) -> None:
        if level == len(levels):
            levels.append([])
            counts.append(0)
        levels[level].append(entry)
        counts[level] += 1
        if len(levels[level]) == MAX_LINKS:
            node = _file_node(levels[level])
            levels[level] = []
            push(level + 1, node)

    def leaf(data: bytes) -> None:
        push(0, _Entry(_cid_bytes(_RAW, data), len(data), len(data)))

    buf = bytearray()
    any_chunk = False
    for piece in chunks:
        buf += piece
        while len(buf) >= CHUNK_SIZE:
            leaf(bytes(buf[:CHUNK_SIZE]))
            del buf[:CHUNK_SIZE]
            any_chunk = True
    if buf or not any_chunk:
        leaf(bytes(buf))
    # Close the tree bottom-up. A level that only ever held one entry is the root (higher levels
    # exist only after a full batch of MAX_LINKS, so that entry is still pending there).
    level = 0
    while counts[level] != 1:
        if levels[level]:
            pending, levels[level] = levels[level], []
            push(level + 1, _file_node(pending))
        level += 1
    return cid_to_str(levels[level][0].cid)


def cid_of_bytes(data: bytes) -> str:
    """CIDv1 (base32) of in-memory content."""
    return cid_of_chunks([data])


def cid_of_file(path: Path | str) -> str:
    """CIDv1 (base32) of a file, read in 1 MiB pieces."""
    try:
        with open(path, "rb") as f:
            return cid_of_chunks(iter(lambda: f.read(CHUNK_SIZE), b""))
    except OSError as exc:
        raise CidError(f"cannot read {path}: {exc.strerror}") from exc
