"""A small client for Kubo's HTTP RPC (optional pinning backend), with medfed's CID profile.

Kubo's RPC is POST-only under /api/v0. `add` uses the flags that make Kubo's CID equal
`p2p.cid.cid_of_file`, and every downloaded file is checked against the CID it was asked for.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from p2p.cid import cid_of_file
from p2p.errors import IpfsError

# Must stay in step with p2p/cid.py (see docs/p2p.md, "Content ids").
ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": "size-1048576",
    "hash": "sha2-256",
    "pin": "true",
    "quieter": "true",
}


class KuboClient:
    """Talks to a Kubo node at `api_url` (e.g. http://127.0.0.1:5001)."""

    def __init__(self, api_url: str, timeout: float = 120.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def _url(self, command: str) -> str:
        return f"{self.api_url}/api/v0/{command}"

    def _post(self, command: str, params: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            resp = httpx.post(self._url(command), params=params, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise IpfsError(
                f"IPFS API {self.api_url} unreachable ({exc}); check --ipfs-api / that Kubo runs"
            ) from exc
        _raise_for_kubo_error(resp, command)
        return resp

    def version(self) -> str:
        """Kubo's version string (a cheap reachability check)."""
        return str(self._post("version", {}).json().get("Version", ""))

    def add(self, path: Path | str, verify: bool = True) -> str:
        """Add and pin a file; return its CID. With `verify`, the CID must equal cid_of_file(path)."""
        path = Path(path)
        with open(path, "rb") as f:
            resp = self._post("add", ADD_PARAMS, files={"file": (path.name, f, "application/octet-stream")})
        lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        if not lines or "Hash" not in lines[-1]:
            raise IpfsError(f"IPFS add returned no CID: {resp.text[:200]!r}")
        cid = str(lines[-1]["Hash"])
        if verify:
            local = cid_of_file(path)
            if cid != local:
                raise IpfsError(
                    f"Kubo returned CID {cid}, expected {local}; its add profile differs from medfed's"
                )
        return cid

    def pin(self, cid: str) -> None:
        """Pin a CID on the node (fetching it from the IPFS network if needed)."""
        resp = self._post("pin/add", {"arg": cid})
        if cid not in resp.json().get("Pins", []):
            raise IpfsError(f"IPFS pin/add did not confirm {cid}: {resp.text[:200]!r}")

    def cat(self, cid: str, dest: Path | str, max_bytes: int | None = None) -> Path:
        """Download a CID into `dest` (atomically) and check the bytes hash to that CID."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        try:
            with httpx.stream("POST", self._url("cat"), params={"arg": cid}, timeout=self.timeout) as resp:
                if resp.status_code != 200:
                    resp.read()
                    _raise_for_kubo_error(resp, "cat")
                got = 0
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 20):
                        got += len(chunk)
                        if max_bytes is not None and got > max_bytes:
                            raise IpfsError(f"{cid} is larger than the {max_bytes} bytes allowed")
                        f.write(chunk)
            actual = cid_of_file(tmp)
            if actual != cid:
                raise IpfsError(f"IPFS returned bytes with CID {actual} for {cid}; refusing them")
            os.replace(tmp, dest)
            return dest
        except httpx.HTTPError as exc:
            raise IpfsError(f"IPFS cat {cid} from {self.api_url} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)


def _raise_for_kubo_error(resp: httpx.Response, command: str) -> None:
    if resp.status_code == 200:
        return
    try:
        message = resp.json().get("Message", resp.text)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        message = resp.text
    raise IpfsError(f"IPFS {command} failed (HTTP {resp.status_code}): {str(message)[:300]}")
