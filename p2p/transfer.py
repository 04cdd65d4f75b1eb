"""The adapter transfer protocol `/medfed/adapter/1.0.0`: one request, one streamed file.

Request  (client -> server): frame {"v":1,"sha256":<hex>,"max_bytes":<int>}
Response (server -> client): frame {"v":1,"status":"ok","size":<int>} then exactly `size` raw
bytes, then the server closes its write side. Any other status ("refused", "not_found",
"too_large", "busy", "bad_request", "error") comes with a "reason" string and no body. "busy" is
sent at once, before the request is read, when the server already serves its limit of streams.
A frame is uvarint(length) + canonical JSON (see framing.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from p2p.errors import TransferError, TransferRefused
from p2p.framing import ByteStream, FramedReader, encode_frame

log = logging.getLogger(__name__)

PROTOCOL_ID = "/medfed/adapter/1.0.0"
VERSION = 1
CHUNK = 1 << 20  # 1 MiB writes
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

REFUSED_STATUSES = frozenset({"refused", "not_found", "too_large", "busy"})


class WrongHash(TransferError):
    """The bytes received do not hash to the requested sha256 (the peer is penalised)."""


class Oversize(TransferError):
    """The peer announced or sent more bytes than allowed (the peer is penalised)."""


class TooLarge(TransferRefused):
    """The provider answered ``too_large``: the file is bigger than the limit we asked with.

    A sha256 names one byte string, so this is final: asking again cannot make it smaller."""


async def serve_request(
    stream: ByteStream,
    peer_address: str,
    lookup: Callable[[str], Path | None],
    may_serve: Callable[[str, str], bool],
    timeout: float,
) -> str:
    """Server side of one request. Returns the status sent (for logs and tests)."""
    reader = FramedReader(stream)
    try:
        with trio.fail_after(timeout):
            req = await reader.read_frame()
    except TransferError as exc:
        await _reply(stream, "bad_request", f"unreadable request: {exc}")
        return "bad_request"
    sha = req.get("sha256")
    max_bytes = req.get("max_bytes")
    if (
        req.get("v") != VERSION
        or not isinstance(sha, str)
        or not _SHA256.match(sha)
        or not isinstance(max_bytes, int)
        or max_bytes < 0
    ):
        await _reply(stream, "bad_request", f"expected v={VERSION}, 64-hex sha256 and max_bytes >= 0")
        return "bad_request"
    # access first: a peer that may not fetch learns nothing, not even whether we hold the file
    try:
        allowed = bool(may_serve(peer_address, sha))
    except Exception:
        log.exception("may_serve callback failed for %s %s", peer_address, sha[:12])
        allowed = False
    if not allowed:
        await _reply(stream, "refused", f"{peer_address} may not fetch {sha[:12]} (yet)")
        return "refused"
    path = lookup(sha)
    if path is None or not path.is_file():
        await _reply(stream, "not_found", f"this peer does not serve {sha[:12]}")
        return "not_found"
    size = path.stat().st_size
    if size > max_bytes:
        await _reply(stream, "too_large", f"file is {size} bytes, client accepts {max_bytes}")
        return "too_large"
    await stream.write(encode_frame({"v": VERSION, "status": "ok", "size": size}))
    sent = 0
    async with await trio.open_file(path, "rb") as f:
        while sent < size:
            chunk = await f.read(min(CHUNK, size - sent))
            if not chunk:
                raise TransferError(f"{path} shrank while being served")
            with trio.fail_after(timeout):
                await stream.write(chunk)
            sent += len(chunk)
    return "ok"


async def _reply(stream: ByteStream, status: str, reason: str) -> None:
    await stream.write(encode_frame({"v": VERSION, "status": status, "reason": reason}))


async def refuse(stream: ByteStream, status: str, reason: str) -> None:
    """Answer without reading the request (``busy``, or ``refused`` to a non-member)."""
    await _reply(stream, status, reason)


async def fetch_from_stream(
    stream: ByteStream,
    sha256_hex: str,
    dest_dir: Path,
    max_bytes: int,
    timeout: float,
    on_progress: Callable[[int], Any] | None = None,
) -> Path:
    """Client side over an open stream: request, receive, hash, rename into dest_dir/<sha256>.

    `timeout` bounds each wait for the peer (no progress for that long fails the attempt).
    """
    await stream.write(encode_frame({"v": VERSION, "sha256": sha256_hex, "max_bytes": max_bytes}))
    reader = FramedReader(stream)
    with trio.fail_after(timeout):
        head = await reader.read_frame()
    status = head.get("status")
    if status != "ok":
        reason = str(head.get("reason", ""))[:300]
        if status == "too_large":
            raise TooLarge(f"peer refused {sha256_hex[:12]}: too_large: {reason}")
        if status in REFUSED_STATUSES:
            raise TransferRefused(f"peer refused {sha256_hex[:12]}: {status}: {reason}")
        raise TransferError(f"peer answered {status!r} for {sha256_hex[:12]}: {reason}")
    size = head.get("size")
    if not isinstance(size, int) or size < 0:
        raise TransferError(f"peer sent a bad size header {size!r}")
    if size > max_bytes:
        raise Oversize(f"peer announced {size} bytes, limit is {max_bytes}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{sha256_hex}.{secrets.token_hex(4)}.part"
    h = hashlib.sha256()
    got = 0
    try:
        with open(tmp, "wb") as f:
            while got < size:
                with trio.fail_after(timeout):
                    chunk = await reader.read_some(size - got)
                if not chunk:
                    raise TransferError(f"peer closed the stream after {got} of {size} bytes")
                f.write(chunk)
                h.update(chunk)
                got += len(chunk)
                if on_progress is not None:
                    on_progress(got)
            # The body must end exactly at `size`: extra bytes mean a broken or malicious sender.
            with trio.move_on_after(timeout):
                extra = await reader.read_some(1)
                if extra:
                    raise Oversize(f"peer sent more than the {size} bytes it announced")
        digest = h.hexdigest()
        if digest != sha256_hex:
            raise WrongHash(f"received bytes hash to {digest[:12]}, expected {sha256_hex[:12]}")
        final = dest_dir / sha256_hex
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)
