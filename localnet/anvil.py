"""Starting and stopping a local anvil devnet (Istanbul rules, chain id 16166, 127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAIN_ID = 16166
HARDFORK = "istanbul"
_LISTEN = re.compile(r"Listening on ([0-9.]+):(\d+)")
# anvils started by this process, kept so they are reaped by us (no zombies, no ResourceWarning)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class AnvilError(RuntimeError):
    """anvil could not be found, started or stopped; the message names the fix."""


@dataclass(frozen=True)
class AnvilProcess:
    """A running anvil: its pid, RPC URL and log file."""

    pid: int
    rpc_url: str
    port: int
    log_path: Path


def find_anvil() -> Path:
    """The anvil binary: MEDFED_ANVIL, the platform package's native binary, or node_modules/.bin/anvil."""
    env = os.environ.get("MEDFED_ANVIL")
    if env:
        return Path(env)
    machine = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = platform.system().lower()
    native = REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if native.exists():
        return native  # run the binary itself, so the pid we record is anvil's own
    wrapper = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    raise AnvilError("anvil not found: run `make bootstrap` (npm ci installs @foundry-rs/anvil)")


def start_anvil(
    log_path: Path,
    port: int = 0,
    *,
    block_time_s: float | None = None,
    timeout_s: float = 30.0,
    host: str = "127.0.0.1",
) -> AnvilProcess:
    """Start anvil on `host`:`port` (0 = a free port) and wait until it answers JSON-RPC."""
    cmd = [
        str(find_anvil()),
        "--host",
        host,
        "--port",
        str(port),
        "--hardfork",
        HARDFORK,
        "--chain-id",
        str(CHAIN_ID),
        "--accounts",
        "1",
    ]
    if block_time_s:
        # mixed: transactions still mine at once, and empty blocks every block_time_s keep
        # block.timestamp (what views see) close to the wall clock
        cmd += ["--block-time", str(block_time_s), "--mixed-mining"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen(
            cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    rpc_url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise AnvilError(f"anvil exited with code {proc.returncode} ({tail[0]}): see {log_path}")
        if rpc_url is None:
            m = _LISTEN.search(log_path.read_text(errors="replace"))
            if m:
                port = int(m.group(2))
                rpc_url = f"http://{host}:{port}"
        if rpc_url is not None and _answers(rpc_url):
            _CHILDREN[proc.pid] = proc
            return AnvilProcess(pid=proc.pid, rpc_url=rpc_url, port=port, log_path=log_path)
        time.sleep(0.05)
    _terminate(proc.pid)
    raise AnvilError(f"anvil did not answer within {timeout_s:.0f} s: see {log_path}")


def _answers(rpc_url: str) -> bool:
    try:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        r = requests.post(rpc_url, json=body, timeout=1)
        return r.ok and "result" in r.json()
    except (requests.RequestException, ValueError):
        return False


def set_balance(rpc_url: str, address: str, wei: int) -> None:
    """Give `address` exactly `wei` (anvil_setBalance; devnet only)."""
    rpc(rpc_url, "anvil_setBalance", [address, hex(wei)])


def rpc(rpc_url: str, method: str, params: list[object]) -> object:
    """One raw JSON-RPC call (anvil_*/evm_* helpers); AnvilError on an error answer."""
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    body = requests.post(rpc_url, json=request, timeout=10).json()
    if "error" in body:
        raise AnvilError(f"{method} failed: {body['error'].get('message')}: is {rpc_url} an anvil?")
    return body.get("result")


def is_anvil(pid: int) -> bool:
    """True when `pid` is a live anvil process (checked through /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(part.decode(errors="replace")).name == "anvil" for part in cmdline[:2] if part)


def stop_anvil(pid: int, timeout_s: float = 10.0) -> bool:
    """Stop the anvil with this pid; False if it was not running. Refuses a pid that is not anvil."""
    if not pid_alive(pid):
        return False
    if not is_anvil(pid):
        raise AnvilError(
            f"pid {pid} is not an anvil process: refusing to stop it (the devnet is gone; delete its dir)"
        )
    _terminate(pid, timeout_s)
    return True


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of ours counts as gone, and is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    if state != "Z":
        return True
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    return False


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.terminate()
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
