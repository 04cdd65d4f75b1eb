"""`medfed-node explorer ...` and `python -m node.explorer ...`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from chain.errors import ChainError
from node.explorer.errors import ExplorerError

log = logging.getLogger("medfed.explorer")

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The explorer's options (shared by the subcommand and the standalone module)."""
    p.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545")
    p.add_argument("--coordinator", required=True, help="address of the Coordinator contract")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0 = any free port; default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument(
        "--db",
        default=None,
        help="SQLite index file (default .medfed/explorer-<coordinator>.sqlite); reused across restarts",
    )
    p.add_argument(
        "--profile",
        choices=["auto", "devnet", "cypherium"],
        default="auto",
        help="chain profile (default auto: from the node's client version; the time unit always "
        "comes from the chain's blocks)",
    )
    p.add_argument(
        "--from-block",
        type=int,
        default=None,
        help="first block to index on a fresh database (default: the coordinator's deployment block)",
    )
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls for new blocks (default 1)")
    # SUPPRESS: under `medfed-node --debug explorer ...` the parent's flag must not be reset to False
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs"
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `explorer` subcommand to `medfed-node`'s subparsers; its handler is `args.func`."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "explorer",
        help="serve the federation explorer (web page + JSON API) read from the chain",
        description="Index the coordinator's events into SQLite and serve a web page + JSON API.",
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    return Path(".medfed") / f"explorer-{args.coordinator.lower()}.sqlite"


def run(args: argparse.Namespace) -> int:
    """Start the explorer and serve until SIGINT/SIGTERM. Returns the exit code."""
    from node.explorer.server import URL_LINE_PREFIX, start_explorer

    debug = bool(getattr(args, "debug", False))
    if not _ADDRESS.match(args.coordinator):
        print(
            f"medfed-node explorer: --coordinator {args.coordinator[:60]!r} is not an address "
            "(0x followed by 40 hex characters): copy it from deployment.json",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        handle = start_explorer(
            args.rpc,
            args.coordinator,
            _db_path(args),
            host=args.host,
            port=args.port,
            profile=args.profile,
            poll_s=args.poll,
            from_block=args.from_block,
        )
    except (ExplorerError, ChainError, OSError, ValueError) as e:
        if debug:
            raise
        print(f"medfed-node explorer: {e}", file=sys.stderr)
        return 2
    print(f"{URL_LINE_PREFIX}{handle.url}", flush=True)
    url_file = os.environ.get("MEDFED_EXPLORER_URL_FILE")
    if url_file:
        tmp = Path(url_file + ".tmp")
        tmp.write_text(handle.url + "\n")
        tmp.replace(url_file)
    done = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    handle.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m node.explorer`."""
    p = argparse.ArgumentParser(
        prog="python -m node.explorer",
        description="Index the coordinator's events into SQLite and serve a web page + JSON API.",
    )
    add_arguments(p)
    return run(p.parse_args(argv))
