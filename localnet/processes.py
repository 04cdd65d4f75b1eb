"""The processes of a local federation: starting and stopping nodes, D/processes.json, `down`, `status`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localnet.anvil import pid_alive
from localnet.chain import DevnetError, devnet_running, load_devnet, stop_devnet
from localnet.sites import Site

log = logging.getLogger("medfed.localnet")

PROCESSES_FILE = "processes.json"


# a node that exits with this code asks `wait_rounds(restart_crashed=True)` to start it again (test
# behaviours crash with it: a site that dies at a precise step and comes back)
RESTART_EXIT_CODE = 17


@dataclass
class Federation:
    """A running local federation (what `up` started)."""

    dir: Path
    devnet: Any  # localnet.chain.Devnet
    sites: list[Site]
    config_paths: list[Path]
    state_dirs: list[Path]
    node_pids: dict[int, int] = field(default_factory=dict)
    explorer_pid: int | None = None
    explorer_url: str | None = None
    # node -> `medfed-node start --behaviour` spec (node/behaviour.py): a test harness's dishonest node
    behaviours: dict[int, str] = field(default_factory=dict)
    restarts: dict[int, int] = field(default_factory=dict)  # node -> restarts after RESTART_EXIT_CODE
    exited: dict[int, int] = field(default_factory=dict)  # node -> exit code, for nodes that died
    _last_wake: float = 0.0  # when keep_chain_awake last looked (monotonic)
    monitoring_ports: dict[int, int] = field(default_factory=dict)  # node -> its /metrics port
    # Cypherium: restart the chain node after IDLE_RESTART_S without a block (keep_chain_awake), a
    # dev-only workaround for the one-member slow-down; tests of the nodes' own keepalive turn it off
    restart_idle_chain: bool = True
    # issue 21: nodes whose wallets were not admitted at deployment: started with
    # --wait-for-admission, they join once the members vote them in
    pending_admission: set[int] = field(default_factory=set)
    # issue 19: sites in network namespaces (localnet/netns.py NetPlan), None = all on loopback
    netns: Any = None

    def record(self) -> None:
        """Write D/processes.json (what `down` stops)."""
        data = {
            "nodes": {str(i): pid for i, pid in self.node_pids.items()},
            "explorer": self.explorer_pid,
            "explorer_url": self.explorer_url,
            "anvil": self.devnet.anvil_pid,  # the chain's pid (anvil or cypher)
            "chain": self.devnet.kind,
            "netns": self.netns.tag if self.netns is not None else None,
        }
        tmp = self.dir / (PROCESSES_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.dir / PROCESSES_FILE)

    def log_path(self, i: int) -> Path:
        """Log file of node i."""
        return self.dir / "logs" / f"node-{i}.log"

    def start_node(self, i: int) -> int:
        """Start node i as its own `medfed-node start` process (its behaviour, if any); return its pid."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path(i).parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path(i).open("ab")
        cmd = [
            *(self.netns.exec_prefix(i) if self.netns is not None else []),
            sys.executable,
            "-m",
            "node.cli",
            "start",
            "--key",
            str(self.devnet.wallets[i]),
            "--config",
            str(self.config_paths[i]),
            "--password-file",
            str(self.devnet.password_file),
        ]
        if self.behaviours.get(i):
            cmd += ["--behaviour", self.behaviours[i]]
        if i in self.pending_admission:
            cmd.append("--wait-for-admission")
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        out.close()
        self.node_pids[i] = proc.pid
        self._procs[i] = proc
        self.record()
        log.info("node %d (%s) started, pid %d, log %s", i, self.sites[i].name, proc.pid, self.log_path(i))
        return proc.pid

    @property
    def _procs(self) -> dict[int, subprocess.Popen[bytes]]:
        if not hasattr(self, "_popen"):
            self._popen: dict[int, subprocess.Popen[bytes]] = {}
        return self._popen

    def node_exit_code(self, i: int) -> int | None:
        """None while node i runs, else its exit code."""
        proc = self._procs.get(i)
        return None if proc is None else proc.poll()

    def stop_node(self, i: int, sig: int = signal.SIGTERM) -> None:
        """Stop node i (its whole process group) and wait for it."""
        proc = self._procs.get(i)
        if proc is None or proc.poll() is not None:
            return
        _kill_group(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def status(self, i: int) -> dict[str, Any]:
        """Node i's status.json (empty before it wrote one)."""
        try:
            data: dict[str, Any] = json.loads((self.state_dirs[i] / "status.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def metrics(self, i: int) -> dict[str, Any]:
        """Node i's metrics.json ({round: {...}}; round 0 = the initial adapter)."""
        try:
            data: dict[str, Any] = json.loads((self.state_dirs[i] / "metrics.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def client(self) -> Any:
        """A view-only coordinator client."""
        return self.devnet.client()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout_s: float = 15.0) -> None:
    end = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if pid_alive(pid):
        _kill_group(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


def down(dir: str | Path) -> list[str]:
    """Stop every process `up` started in ``dir`` (nodes, explorer, anvil) and remove its network
    namespaces (--netns); return what was stopped or removed. Idempotent."""
    root = Path(dir).resolve()
    stopped: list[str] = []
    rec_path = root / PROCESSES_FILE
    if rec_path.exists():
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            rec = {}
        for i, pid in sorted((rec.get("nodes") or {}).items()):
            if pid_alive(int(pid)):
                _kill_group(int(pid), signal.SIGTERM)
                stopped.append(f"node {i} (pid {pid})")
        if rec.get("explorer") and pid_alive(int(rec["explorer"])):
            _kill_group(int(rec["explorer"]), signal.SIGTERM)
            stopped.append(f"explorer (pid {rec['explorer']})")
        for pid in [*(rec.get("nodes") or {}).values(), rec.get("explorer")]:
            if pid:
                _wait_gone(int(pid))
        rec_path.replace(root / "processes.stopped.json")
    try:
        kind = _chain_kind(root / "chain")
        if stop_devnet(root / "chain"):
            stopped.append("anvil" if kind == "anvil" else "cypherium node")
    except DevnetError:
        pass
    from localnet.netns import teardown

    stopped += teardown(root)  # namespaces, veths, bridge, firewall rules: also after a crash
    return stopped


def _chain_kind(chain_dir: Path) -> str:
    try:
        return str(json.loads((chain_dir / "deployment.json").read_text()).get("chain", "anvil"))
    except (OSError, ValueError):
        return "anvil"


def status_lines(dir: str | Path) -> list[str]:
    """`medfed-localnet status`: the processes and each node's status.json."""
    root = Path(dir).resolve()
    rec_path = root / PROCESSES_FILE
    if not rec_path.exists():
        return [f"no federation running in {root} (start one with `medfed-localnet up --dir {dir}`)"]
    rec = json.loads(rec_path.read_text())
    lines = []
    for i, pid in sorted((rec.get("nodes") or {}).items()):
        st = {}
        sp = root / "nodes" / f"node{i}" / "state" / "status.json"
        if sp.exists():
            st = json.loads(sp.read_text())
        alive = "running" if pid_alive(int(pid)) else "stopped"
        lines.append(
            f"node {i} pid {pid} {alive}: round {st.get('round', '-')} {st.get('phase', '-')} "
            f"role {st.get('role', '-')} ({st.get('activity', '-')})"
        )
    if rec.get("explorer_url"):
        lines.append(f"explorer {rec['explorer_url']} pid {rec.get('explorer')}")
    try:
        devnet = load_devnet(root / "chain")
    except DevnetError:
        return lines
    kind = devnet.kind + (f" (genesis {devnet.genesis})" if devnet.genesis else "")
    alive = "running" if devnet_running(root / "chain") else "stopped"
    lines.append(f"chain {kind} {devnet.rpc_url} pid {devnet.chain_pid} {alive}")
    return lines
