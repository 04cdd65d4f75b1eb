"""HTTP server of the explorer: static page + JSON API + a background indexing thread.

`start_explorer(...)` runs it inside the calling process (threads) and returns an
`ExplorerHandle`; `spawn_explorer(...)` runs it as a child process
(`python -m node.explorer`) and returns once the child has printed its URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from node.explorer.api import Api, safe_route
from node.explorer.db import Database
from node.explorer.errors import ExplorerError
from node.outage import OutageLog, rpc_unreachable

log = logging.getLogger("medfed.explorer")

STATIC_DIR = Path(__file__).with_name("static")
URL_LINE_PREFIX = "EXPLORER_URL "
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")

# Everything the page loads comes from this server: no CDN, no external fetch.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)


class _Handler(BaseHTTPRequestHandler):
    server: _ExplorerHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            parts = urlsplit(self.path)
            if parts.path == "/api" or parts.path.startswith("/api/"):
                status, body = safe_route(self.server.api, parts.path, parse_qs(parts.query))
                self._json(status, body)
            else:
                self._static(parts.path)
        except (BrokenPipeError, ConnectionResetError):  # the reader went away: nothing to answer
            return
        except Exception:  # never show a stack trace to the reader; log it for the operator
            log.exception("explorer: error answering %s", self.path[:200])
            with contextlib.suppress(OSError):
                self._json(500, {"error": "internal error; see the explorer's log", "status": 500})

    def do_POST(self) -> None:
        self._not_allowed()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_POST

    def _not_allowed(self) -> None:
        self.send_error(405, f"method {str(self.command)[:20]} not allowed; the explorer is read-only (GET)")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error answer is JSON (http.server's default is an HTML page), and what the base
        class answers 501/505 for (an unknown method or HTTP version) is the client's error: 4xx."""
        if code == 501:
            code, message = 405, f"method {str(self.command)[:20]!r} not allowed; use GET"
        elif code == 505:  # an HTTP version we do not speak is the client's error too
            code = 400
        if self.request_version == "HTTP/0.9":  # unparsed request line: still answer with headers
            self.request_version = "HTTP/1.1"
        short = self.responses.get(code, ("error", ""))[0]
        text = (message or short)[:200]
        self.log_error("code %d, message %s", code, text)
        body = json.dumps({"error": text, "status": code}, separators=(",", ":")).encode()
        self.send_response(code, short)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        if code == 405:
            self.send_header("Allow", "GET, HEAD")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        # Only plain, short file names inside static/: no directories, no traversal, no names the
        # file system refuses (too long, NUL): those would raise instead of answering 404.
        if not _STATIC_NAME.fullmatch(name) or not (STATIC_DIR / name).is_file():
            self._json(404, {"error": f"no such page {path[:120]!r}", "status": 404})
            return
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, (STATIC_DIR / name).read_bytes(), ctype, cache="no-cache")


class _ExplorerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], api: Api) -> None:
        super().__init__(addr, _Handler)
        self.api = api


@dataclass
class ExplorerHandle:
    """A running in-process explorer: its URL, database, and `stop()`."""

    url: str
    db: Database
    httpd: _ExplorerHTTPServer
    indexer: Any
    _stop: threading.Event
    _threads: list[threading.Thread]

    def stop(self) -> None:
        """Stop serving and indexing, join the threads and close the database."""
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)
        self.db.close()

    def __enter__(self) -> ExplorerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _index_loop(indexer: Any, stop: threading.Event, poll_s: float) -> None:
    failures = 0
    outage = OutageLog(log, "explorer: chain RPC")
    # the same indexing error at every poll is said once a minute too
    errors = OutageLog(log, "explorer: indexing", state="failing")
    while not stop.is_set():
        try:
            indexer.sync_once()
            failures = 0
            outage.ok()
            errors.ok()
        except ExplorerError as e:
            failures += 1
            errors.failed(e)
        except Exception as e:  # RPC hiccups must not kill the indexer thread
            failures += 1
            if rpc_unreachable(e):
                outage.failed(e)
            else:
                errors.failed(e)
        stop.wait(min(poll_s * (1 + failures), 30.0))


def serve(db: Database, host: str, port: int) -> tuple[_ExplorerHTTPServer, str]:
    """Bind the HTTP server (port 0 = any free port) and return it with its URL (not yet serving)."""
    try:
        httpd = _ExplorerHTTPServer((host, port), Api(db))
    except OSError as e:
        raise ExplorerError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): pass another --port (0 = any free port)"
        ) from None
    bound_host, bound_port = str(httpd.server_address[0]), int(httpd.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return httpd, f"http://{shown}:{bound_port}/"


def start_explorer(
    rpc_url: str,
    coordinator: str,
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    profile: str = "auto",
    poll_s: float = 1.0,
    from_block: int | None = None,
) -> ExplorerHandle:
    """Connect to the chain, index what is there, and serve the explorer from threads of this process.

    Raises the chain client's errors (unreachable RPC, wrong chain, no contract) and
    `IndexMismatch` before binding anything, so a misconfiguration fails fast.
    """
    from node.explorer.indexer import Indexer

    db = Database(db_path)
    try:
        indexer = Indexer.connect(rpc_url, coordinator, db, profile=profile, from_block=from_block)
        httpd, url = serve(db, host, port)
    except BaseException:
        db.close()
        raise
    stop = threading.Event()
    threads = [
        threading.Thread(target=httpd.serve_forever, name="explorer-http", daemon=True),
        threading.Thread(
            target=_index_loop, args=(indexer, stop, poll_s), name="explorer-index", daemon=True
        ),
    ]
    for t in threads:
        t.start()
    log.info("explorer: serving %s (index %s)", url, db.path)
    return ExplorerHandle(url=url, db=db, httpd=httpd, indexer=indexer, _stop=stop, _threads=threads)


def spawn_explorer(
    rpc_url: str,
    coordinator: str,
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    profile: str = "auto",
    log_path: str | Path | None = None,
    timeout_s: float = 30.0,
    from_block: int | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m node.explorer` as a child process; return it and its URL once it serves.

    The child runs in its own session (process group); its stdout/stderr go to `log_path`
    (or are discarded). Stop it with `proc.terminate()` (SIGTERM: it stops serving, closes the
    index and exits 0) then `proc.wait()`.
    """
    db_path = Path(db_path).resolve()  # the child runs in the repository root
    cmd = [
        sys.executable,
        "-m",
        "node.explorer",
        "--rpc",
        rpc_url,
        "--coordinator",
        coordinator,
        "--db",
        str(db_path),
        "--host",
        host,
        "--port",
        str(port),
        "--profile",
        profile,
    ]
    if from_block is not None:
        cmd += ["--from-block", str(from_block)]
    url_file = Path(str(db_path) + ".url")
    url_file.unlink(missing_ok=True)
    env = {**os.environ, "MEDFED_EXPLORER_URL_FILE": str(url_file)}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (handed to the child)
    try:
        # Its own session (process group), like the nodes `medfed-localnet up` starts: it outlives
        # the launcher and a Ctrl-C in the launcher's terminal.
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=_repo_root(),
            start_new_session=True,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if url_file.exists() and url_file.read_text().strip():
            return proc, url_file.read_text().strip()
        if proc.poll() is not None:
            raise ExplorerError(
                f"explorer exited with code {proc.returncode} before serving; see {log_path or 'its output'}"
            )
        time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=10)
    raise ExplorerError(f"explorer did not start within {timeout_s:.0f} s; see {log_path or 'its output'}")


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])
