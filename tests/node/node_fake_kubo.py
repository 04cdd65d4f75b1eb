"""FAKE Kubo RPC (add, pin/add, cat) for the node's IPFS fallback test: Kubo cannot be installed
here, so this stands in for it. CIDs are computed with p2p.cid, as the medfed add profile gives."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from p2p.cid import cid_of_bytes


class FakeKubo:
    """`with FakeKubo() as kubo:`; `kubo.url` is the API address, `kubo.blocks` what was added."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                url = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                cmd = url.path.removeprefix("/api/v0/")
                if cmd == "add":
                    boundary = self.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
                    data = body.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
                    cid = cid_of_bytes(data)
                    fake.blocks[cid] = data
                    self._send(200, json.dumps({"Name": "f", "Hash": cid, "Size": str(len(data))}).encode())
                elif cmd == "cat" and q.get("arg") in fake.blocks:
                    self._send(200, fake.blocks[q["arg"]])
                else:
                    self._send(
                        500, json.dumps({"Message": f"{cmd}: not found", "Code": 0, "Type": "error"}).encode()
                    )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
