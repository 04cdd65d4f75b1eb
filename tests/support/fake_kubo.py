"""FAKE Kubo RPC server for tests: Kubo cannot be installed here, so this stands in for it.

It speaks the subset of /api/v0 that p2p.ipfs uses (add, pin/add, cat, version) with Kubo's
response shapes and error format, and computes CIDs with p2p.cid only when the add flags are
the medfed profile (a real Kubo would otherwise return a different CID; the fake then answers
with a deliberately different one so a wrong flag is caught).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from p2p.cid import cid_of_bytes

PROFILE = {"cid-version": "1", "raw-leaves": "true", "chunker": "size-1048576", "hash": "sha2-256"}


class FakeKubo:
    """Run with `with FakeKubo() as kubo:`; `kubo.url` is the API address."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.pins: set[str] = set()
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.corrupt_cat = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, message: str) -> None:
                self._send(500, json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode())

            def do_POST(self) -> None:
                url = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                cmd = url.path.removeprefix("/api/v0/")
                fake.calls.append((cmd, q))
                if cmd == "version":
                    self._send(200, b'{"Version":"0.0.0-fake"}')
                elif cmd == "add":
                    data = _multipart_file(body, self.headers.get("Content-Type", ""))
                    cid = cid_of_bytes(data)
                    if any(q.get(k) != v for k, v in PROFILE.items()):
                        cid = "bafkreiwrongprofile" + cid[19:]
                    fake.blocks[cid] = data
                    if q.get("pin", "true") == "true":
                        fake.pins.add(cid)
                    self._send(
                        200,
                        json.dumps({"Name": "file", "Hash": cid, "Size": str(len(data))}).encode() + b"\n",
                    )
                elif cmd == "pin/add":
                    cid = q.get("arg", "")
                    if cid not in fake.blocks:
                        return self._error(f"failed to resolve {cid}: not found")
                    fake.pins.add(cid)
                    self._send(200, json.dumps({"Pins": [cid]}).encode())
                elif cmd == "cat":
                    cid = q.get("arg", "")
                    if cid not in fake.blocks:
                        return self._error(f"block was not found locally (offline): {cid}")
                    data = fake.blocks[cid]
                    if fake.corrupt_cat:
                        data = data[:-1] + bytes([data[-1] ^ 1]) if data else b"x"
                    self._send(200, data, "text/plain")
                else:
                    self._send(404, b"404 page not found", "text/plain")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _multipart_file(body: bytes, content_type: str) -> bytes:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    part = body.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
