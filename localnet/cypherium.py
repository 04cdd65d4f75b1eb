"""Starting and stopping a real one-member Cypherium chain through the shared scripts.

The node itself (`bin/cypher`, Cypherium's own client) and its `start.sh DATADIR [--genesis ...]
[--http-port N]` / `stop.sh DATADIR` live in `../shared/cypherium` beside the repository
(override with MEDFED_CYPHERIUM_DIR). Its README lists how it differs from anvil: blocks only
while transactions are pending, millisecond timestamps, receipts always `status: 1`, and the
single-member quirk (after ~3 idle minutes the node slows to one block per ~120 s until it is
restarted), which `restart_if_idle` works around by restarting it on the same port. That restart
is a dev-only fallback of the launcher (a site cannot restart the chain's node): `medfed-node`
itself keeps the chain live with its keepalive (node/keepalive.py, `[chain] keepalive_s`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = "MEDFED_CYPHERIUM_DIR"
GENESES = ("istanbul", "official-rules")
# The funded account of the shared test chain: the well-known public anvil/hardhat test key
# (README of ../shared/cypherium). Not a secret; never use it on a real network.
FUNDED_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
FUNDED_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
# The node slows down after ~180 s without a block; restart it before that.
IDLE_RESTART_S = 150.0


class CypheriumError(RuntimeError):
    """The Cypherium node could not be found, started or stopped; the message names the fix."""


@dataclass(frozen=True)
class CypheriumNode:
    """A running Cypherium node: its pid, RPC URL, HTTP port and data directory."""

    pid: int
    rpc_url: str
    port: int
    datadir: Path

    @property
    def log_path(self) -> Path:
        return self.datadir / "cypher.log"


def cypherium_dir() -> Path:
    """The folder holding start.sh/stop.sh: $MEDFED_CYPHERIUM_DIR or ../shared/cypherium."""
    env = os.environ.get(ENV_DIR)
    where = Path(env) if env else REPO_ROOT.parent / "shared" / "cypherium"
    if not (where / "start.sh").is_file() or not (where / "stop.sh").is_file():
        raise CypheriumError(
            f"no Cypherium node scripts in {where} (start.sh, stop.sh): put the shared cypherium folder "
            f"there or set {ENV_DIR}=/path/to/cypherium"
        )
    return where.resolve()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cypherium(
    datadir: str | Path, genesis: str = "istanbul", http_port: int = 0, timeout_s: float = 240.0
) -> CypheriumNode:
    """Start (or restart, when `datadir` already holds a chain) a node with start.sh; wait until it mines.

    `http_port` 0 picks a free port; pass the recorded one to keep the RPC URL across restarts.
    """
    if genesis not in GENESES:
        raise CypheriumError(f"--genesis {genesis!r}: choose one of {', '.join(GENESES)}")
    script = cypherium_dir() / "start.sh"
    dd = Path(datadir).resolve()
    dd.mkdir(parents=True, exist_ok=True)
    cmd = [str(script), str(dd), "--genesis", genesis, "--http-port", str(http_port or free_port())]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        stop_cypherium(dd)
        raise CypheriumError(
            f"start.sh did not finish within {timeout_s:.0f} s: see {dd / 'cypher.log'}"
        ) from None
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0 or not last.startswith("rpc="):
        why = (done.stderr.strip().splitlines() or [last or "no output"])[-1]
        stop_cypherium(dd)
        raise CypheriumError(f"the Cypherium node did not start: {why}")
    fields = dict(part.split("=", 1) for part in last.split())
    rpc_url = fields["rpc"]
    return CypheriumNode(
        pid=int(fields["pid"]), rpc_url=rpc_url, port=int(rpc_url.rsplit(":", 1)[1]), datadir=dd
    )


def is_cypher(pid: int) -> bool:
    """True when `pid` is a live cypher process (checked through /proc, as stop.sh does)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"cypher" in cmdline


def recorded_pid(datadir: str | Path) -> int | None:
    """The pid start.sh recorded in `datadir`, if any."""
    try:
        return int((Path(datadir) / "cypher.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop_cypherium(datadir: str | Path) -> bool:
    """Stop the node started in `datadir` (stop.sh, by its recorded pid only); True if it was running."""
    dd = Path(datadir).resolve()
    pid = recorded_pid(dd)
    was_running = pid is not None and is_cypher(pid)
    if not dd.exists():
        return False
    script = cypherium_dir() / "stop.sh"
    try:
        subprocess.run([str(script), str(dd)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CypheriumError(f"stop.sh {dd} did not finish within 30 s: stop pid {pid} by hand") from None
    if pid is not None and is_cypher(pid):
        raise CypheriumError(f"the Cypherium node (pid {pid}) is still running: stop it by hand")
    return was_running


def last_block_age_s(rpc_url: str) -> float | None:
    """Seconds since the latest block was made (None for the genesis block or an unreachable node)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", False]}
    try:
        block = requests.post(rpc_url, json=body, timeout=10).json()["result"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
    if int(block["number"], 16) == 0:
        return None
    return time.time() - int(block["timestamp"], 16) / 1000.0  # produced blocks: milliseconds


def restart_if_idle(node: CypheriumNode, genesis: str, idle_s: float = IDLE_RESTART_S) -> CypheriumNode:
    """Restart the node on the same port when no block was made for `idle_s` (the slow-down quirk).

    A restart makes no block and sends nothing: the chain stays as quiet as it was. Returns the
    (possibly new) node; the RPC URL is unchanged.
    """
    age = last_block_age_s(node.rpc_url)
    if age is None or age < idle_s:
        return node
    stop_cypherium(node.datadir)
    return start_cypherium(node.datadir, genesis, http_port=node.port)
