"""`medfed-localnet up` / `down` / `status`: a whole federation on this machine.

`up` starts the devnet (anvil, or with `--chain cypherium` a real Cypherium node, + Coordinator
deployed with the REAL initial adapter), writes one
wallet + medfed.toml per institution with its own non-IID data, starts every node as its own
`medfed-node start` process (logs in D/logs/node-i.log), starts the explorer, opens round 1 once
every node is ready, follows the rounds, and writes D/summary.json:

    {"base": {"accuracy": {institution: acc}, "macro_acc", "min_acc", "hmean"},
     "rounds": [{"round", "attempts", "aggregator", "global_sha256", "accuracy": {...},
                 "macro_acc", "min_acc", "hmean", "rewards": {address: amount}}]}

Accuracies are fractions in [0, 1]. Every pid it starts is recorded in D/processes.json so
`down` stops exactly those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.types import DeployParams
from localnet.anvil import pid_alive
from localnet.chain import DevnetError

log = logging.getLogger("medfed.localnet")

PROCESSES_FILE = "processes.json"
REPORT_GRACE_S = 60.0  # how long `up` waits for the last round's on-chain metrics after evaluation
SUMMARY_FILE = "summary.json"
# a node that exits with this code asks `wait_rounds(restart_crashed=True)` to start it again (test
# behaviours crash with it: a site that dies at a precise step and comes back)
RESTART_EXIT_CODE = 17
INITIAL_SEED = 0  # must equal node.daemon.INITIAL_SEED
SOURCES = (
    # institution name, train (source, split), eval (source, split)
    ("medqa-mainland", ("medqa-mainland", "dev"), ("medqa-mainland", "test")),
    ("medqa-us", ("medqa-us", "dev"), ("medqa-us", "test")),
    ("medmcqa", ("medmcqa", "train"), ("medmcqa", "eval")),
)


class FederationError(DevnetError):
    """The local federation could not start or a round failed; the message names the fix."""


@dataclass(frozen=True)
class Sizing:
    """How big each round is: deadlines (seconds) and per-node work."""

    commit_s: int
    aggregate_s: int
    verify_s: int
    max_attempts: int
    train_per_round: int
    max_steps: int
    batch_size: int
    grad_accum: int
    max_length: int
    eval_limit: int
    lora_rank: int
    lora_alpha: int
    fetch_patience_s: float
    poll_interval_s: float
    stagger_s: float
    watch_interval_s: float = 0.2  # [rounds] watch_interval_s: react to a mined event within this


# The default-model demo: 3 nodes x 2 rounds in about 15 minutes on 2 CPU cores.
DEFAULT_SIZING = Sizing(
    commit_s=210,
    aggregate_s=90,
    verify_s=60,
    max_attempts=3,
    train_per_round=16,
    max_steps=8,
    batch_size=1,
    grad_accum=2,
    max_length=256,
    eval_limit=40,
    lora_rank=16,
    lora_alpha=32,
    fetch_patience_s=45.0,
    poll_interval_s=2.0,
    stagger_s=3.0,
)
# Tests: the tiny random model, short deadlines.
TINY_SIZING = Sizing(
    commit_s=25,
    aggregate_s=25,
    verify_s=20,
    max_attempts=3,
    train_per_round=16,
    max_steps=4,
    batch_size=2,
    grad_accum=1,
    max_length=128,
    eval_limit=24,
    lora_rank=4,
    lora_alpha=8,
    fetch_patience_s=10.0,
    poll_interval_s=1.0,  # deadlines and staggers only: the chain watcher (0.2 s) reacts to events
    stagger_s=1.0,
)


def sizing_for(model: str, chain: str = "anvil") -> Sizing:
    """The sizing `up` uses for a model on a chain.

    On Cypherium every transaction waits for a block (about 2 s, more under load) and is sent
    by the wall clock into a chain whose latest timestamp may be stale, so the tiny model's
    phases get more room there: commits of three nodes must be mined within the commit phase.
    """
    base = DEFAULT_SIZING if model == "default" else TINY_SIZING
    if chain != "cypherium" or model == "default":
        return base
    return dataclasses.replace(
        base, commit_s=40, aggregate_s=40, verify_s=30, poll_interval_s=1.0, watch_interval_s=0.5
    )


@dataclass(frozen=True)
class Site:
    """One institution: its name (also its published display name) and its data ([data] entries)."""

    name: str
    train: tuple[dict[str, Any], ...]
    eval: tuple[dict[str, Any], ...]


def load_site_plan(path: str | Path, n: int) -> list[Site]:
    """Sites from a TOML file of ``[[site]]`` tables (``name``, ``train``, ``eval``: [data] entries,
    paths relative to that file), one per node in order: ``medfed-localnet up --data FILE``."""
    import tomllib

    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FederationError(f"--data {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FederationError(f"--data {path}: not valid TOML ({exc})") from None
    raw = doc.get("site")
    if not isinstance(raw, list) or not raw:
        raise FederationError(
            f"--data {path}: needs [[site]] tables with name, train and eval (see docs/node.md)"
        )
    if len(raw) < n:
        raise FederationError(
            f"--data {path}: {len(raw)} [[site]] tables for {n} nodes; add sites or lower --nodes"
        )
    sites = []
    for i, item in enumerate(raw[:n]):
        if not isinstance(item, dict) or not {"name", "train", "eval"} <= set(item):
            raise FederationError(f"--data {path}: site {i + 1} needs name, train and eval")

        sites.append(
            Site(
                str(item["name"]),
                _absolute(item["train"], p, i),
                _absolute(item["eval"], p, i),
            )
        )
    return sites


def plan_sites(n: int) -> list[Site]:
    """Non-IID institutions: one source each for 3; more nodes split sources into hash shards."""
    if n < 1:
        raise FederationError("--nodes must be >= 1")
    per_source: dict[int, int] = {}
    for i in range(n):
        per_source[i % len(SOURCES)] = per_source.get(i % len(SOURCES), 0) + 1
    seen: dict[int, int] = {}
    sites = []
    for i in range(n):
        k = i % len(SOURCES)
        seen[k] = seen.get(k, 0) + 1
        name, (ts, tsplit), (es, esplit) = SOURCES[k]
        shards = per_source[k]
        extra = {"shard": f"{seen[k]}/{shards}"} if shards > 1 else {}
        label = f"{name}-{seen[k]}" if shards > 1 else name
        sites.append(
            Site(
                label,
                ({"source": ts, "split": tsplit, **extra},),
                ({"source": es, "split": esplit, **extra},),
            )
        )
    return sites


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

    def record(self) -> None:
        """Write D/processes.json (what `down` stops)."""
        data = {
            "nodes": {str(i): pid for i, pid in self.node_pids.items()},
            "explorer": self.explorer_pid,
            "explorer_url": self.explorer_url,
            "anvil": self.devnet.anvil_pid,  # the chain's pid (anvil or cypher)
            "chain": self.devnet.kind,
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


def build_initial_adapter(
    model_spec: str, rank: int, alpha: int, out_dir: Path, strategy: str = "fedavg", rules: Any = None
) -> tuple[str, str, str, bytes]:
    """The federation's initial adapter (seeded A, B = 0) written canonically.

    Returns (sha256 hex, CID, base model id, config hash of the LoRA settings and the federation
    rules: ``rules`` (a ``FederationRules``), else ``strategy`` with the default bounds)."""
    from p2p.cid import cid_of_file
    from training.adapter_io import WEIGHTS_NAME, write_canonical_adapter
    from training.bounds import FederationRules, federation_config_hash
    from training.lora import LoraSettings, initial_adapter_state
    from training.models import base_model_id, load_base_model

    settings = LoraSettings(rank=rank, alpha=alpha)
    model, _tok = load_base_model(model_spec)
    state = initial_adapter_state(model, settings, INITIAL_SEED)
    base = base_model_id(model_spec)
    sha = write_canonical_adapter(state, settings, base, out_dir)
    config_hash = federation_config_hash(settings, rules or FederationRules(strategy=strategy))
    return sha, str(cid_of_file(out_dir / WEIGHTS_NAME)), base, bytes.fromhex(config_hash)


def _absolute(entries: Any, sites_file: Path, i: int) -> tuple[dict[str, Any], ...]:
    """[data] entries with their paths made absolute (relative to the sites file)."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FederationError(f"--data {sites_file}: site {i + 1}: train/eval must be lists of tables")
    return tuple(
        {**e, **({"path": str(sites_file.parent / e["path"])} if "path" in e else {})} for e in entries
    )


def _toml_value(v: Any) -> str:
    """A TOML inline value (strings are JSON-escaped, which TOML basic strings accept)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def _toml_list(items: tuple[dict[str, Any], ...]) -> str:
    return _toml_value(list(items))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_config_text(
    devnet: Any,
    site: Site,
    sizing: Sizing,
    model: str,
    initial: Path,
    last_round: int,
    threads: int,
    strategy: str = "fedavg",
    rules: Any = None,
    monitoring_port: int = 0,
    keepalive_s: float | None = None,
) -> str:
    """medfed.toml for one local institution (``rules``: a ``FederationRules`` written out in
    full into [aggregation]; None = the defaults; monitoring on 127.0.0.1:``monitoring_port`` if given;
    ``keepalive_s``: [chain] keepalive_s, None = "auto")."""
    extra = ""
    if rules is not None:
        strategy = rules.strategy
        extra = "".join(f"{k} = {v!r}\n" for k, v in sorted(rules.bounds.canonical().items()))
        extra += f"fallback_after = {rules.fallback_after}\n"
    return f"""\
# medfed.toml written by `medfed-localnet up` for institution {site.name}
state_dir = "state"

[node]
name = {_toml_value(site.name)}

[monitoring]
enabled = {_toml_value(bool(monitoring_port))}
listen = "127.0.0.1:{monitoring_port or 9464}"

[chain]
rpc_url = "{devnet.rpc_url}"
coordinator = "{devnet.coordinator}"
profile = "{devnet.profile.name}"
start_block = {devnet.deploy_block}
keepalive_s = {'"auto"' if keepalive_s is None else keepalive_s}

[p2p]
listen = ["/ip4/127.0.0.1/tcp/0"]

[data]
name = {_toml_value(site.name)}
train = {_toml_list(site.train)}
eval = {_toml_list(site.eval)}
train_per_round = {sizing.train_per_round}
eval_limit = {sizing.eval_limit}

[model]
base = "{model}"
initial_adapter = "{initial}"

[lora]
rank = {sizing.lora_rank}
alpha = {sizing.lora_alpha}

[training]
max_steps = {sizing.max_steps}
batch_size = {sizing.batch_size}
grad_accum = {sizing.grad_accum}
max_length = {sizing.max_length}
threads = {threads}

[aggregation]
strategy = "{strategy}"
{extra}
[rounds]
auto_open = true
open_first_round = false
last_round = {last_round}
poll_interval_s = {sizing.poll_interval_s}
fetch_patience_s = {sizing.fetch_patience_s}
stagger_s = {sizing.stagger_s}
watch_interval_s = {sizing.watch_interval_s}
"""


def launch(
    dir: str | Path,
    nodes: int,
    rounds: int,
    model: str = "tiny",
    sizing: Sizing | None = None,
    fresh: bool = False,
    behaviours: Mapping[int, str] | None = None,
    explorer: bool = True,
    rewards: tuple[int, int, int] | None = None,
    strategy: str = "fedavg",
    chain: str = "anvil",
    genesis: str = "istanbul",
    rules: Any = None,
    data: str | Path | None = None,
    monitoring: bool = False,
    keepalive_s: float | None = None,
    members: int | None = None,
    privacy: Mapping[int, str] | None = None,
) -> Federation:
    """Start the chain, deploy with the real initial adapter, write configs, start the nodes.

    ``members``: only the first that many wallets are admitted at deployment; the other nodes
    start with --wait-for-admission and join once the members vote them in (issue 21).

    `chain` "anvil" (default) or "cypherium" (a real node with the `genesis` rule set);
    ``data``: a sites file (see :func:`load_site_plan`) instead of the built-in medical sets;
    ``monitoring``: each node serves /metrics and /healthz on a free local port;
    ``keepalive_s``: the nodes' [chain] keepalive_s (None = "auto": on for Cypherium);
    ``behaviours``: node -> a test harness's behaviour spec (`medfed-node start --behaviour`);
    ``privacy``: node -> a ``[privacy]`` TOML section appended to its medfed.toml (docs/privacy.md)."""
    from localnet.chain import DEVNET_PARAMS, start_devnet

    root = Path(dir).resolve()
    if chain == "cypherium":
        from localnet.cypherium import cypherium_dir

        cypherium_dir()  # fail before any work when the node is not there
    sizing = sizing or sizing_for(model, chain)
    if (root / PROCESSES_FILE).exists():
        if not fresh:
            raise FederationError(
                f"{root} holds a federation: run `medfed-localnet down --dir {dir}` or pass --fresh"
            )
        down(root)
    if fresh and root.exists():
        if (root / "chain" / "deployment.json").exists():  # a chain left without processes.json
            from localnet.chain import stop_devnet

            with contextlib.suppress(DevnetError):
                stop_devnet(root / "chain")
        for sub in ("nodes", "initial", "logs", "chain", "explorer.sqlite", SUMMARY_FILE):
            # a stopped Cypherium node's datadir goes with "chain"
            p = root / sub
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    print(f"building the initial adapter for model {model!r} ...", flush=True)
    initial_dir = root / "initial"
    sha, cid, base, lora_hash = build_initial_adapter(
        model, sizing.lora_rank, sizing.lora_alpha, initial_dir, strategy, rules
    )
    c, a, v = rewards or (
        DEVNET_PARAMS.contributor_reward,
        DEVNET_PARAMS.aggregator_reward,
        DEVNET_PARAMS.verifier_reward,
    )
    params = DeployParams(
        commit_duration_s=sizing.commit_s,
        aggregate_duration_s=sizing.aggregate_s,
        verify_duration_s=sizing.verify_s,
        max_attempts=sizing.max_attempts,
        min_committers=1,
        contributor_reward=c,
        aggregator_reward=a,
        verifier_reward=v,
        open_membership=False,
    )
    devnet = start_devnet(
        root / "chain",
        nodes,
        params,
        initial_sha256=bytes.fromhex(sha),
        initial_cid=cid,
        base_model=base,
        lora_config_hash=lora_hash,
        block_time_s=1.0,
        fresh=fresh,
        chain=chain,
        genesis=genesis,
        members=members,
    )
    kind = "anvil" if devnet.kind == "anvil" else f"cypherium (genesis {devnet.genesis})"
    print(
        f"devnet {kind} {devnet.rpc_url}, coordinator {devnet.coordinator}, initial adapter {sha[:12]}",
        flush=True,
    )
    sites = load_site_plan(data, nodes) if data else plan_sites(nodes)
    threads = max(1, (os.cpu_count() or 1) // nodes)
    configs, states = [], []
    ports: dict[int, int] = {}
    for i, site in enumerate(sites):
        d = root / "nodes" / f"node{i}"
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "medfed.toml"
        if monitoring:
            ports[i] = free_port()
        cfg.write_text(
            node_config_text(
                devnet,
                site,
                sizing,
                model,
                initial_dir / "adapter_model.safetensors",
                rounds,
                threads,
                strategy,
                rules,
                ports.get(i, 0),
                keepalive_s,
            )
            + (privacy or {}).get(i, "")  # issue 20: a [privacy] section for this node
        )
        configs.append(cfg)
        states.append(d / "state")
    fed = Federation(
        root, devnet, sites, configs, states, behaviours=dict(behaviours or {}), monitoring_ports=ports
    )
    fed.pending_admission = set(range(members, nodes)) if members is not None else set()
    for i, port in ports.items():
        print(f"node {i} ({sites[i].name}) metrics on http://127.0.0.1:{port}/metrics", flush=True)
    fed.record()
    try:
        for i in range(nodes):
            fed.start_node(i)
        if explorer:
            _start_explorer(fed)
    except BaseException:
        down(root)
        raise
    return fed


def _start_explorer(fed: Federation) -> None:
    try:
        from node.explorer.server import spawn_explorer
    except ImportError:
        return
    try:
        proc, url = spawn_explorer(
            fed.devnet.rpc_url,
            fed.devnet.coordinator,
            fed.dir / "explorer.sqlite",
            log_path=fed.dir / "logs" / "explorer.log",
            profile=fed.devnet.profile.name,
        )
    except Exception as exc:  # the federation runs without its explorer
        print(f"explorer did not start ({exc}); see {fed.dir / 'logs' / 'explorer.log'}", flush=True)
        return
    fed.explorer_pid, fed.explorer_url = proc.pid, url
    fed.record()
    print(f"explorer: {url}", flush=True)


def wait_ready(fed: Federation, timeout_s: float) -> None:
    """Block until every node wrote status ready (its base evaluation done), or fail naming the node."""
    deadline = time.monotonic() + timeout_s
    while True:
        keep_chain_awake(fed)
        waiting = [
            i
            for i in range(len(fed.sites))
            if i not in fed.pending_admission and not fed.status(i).get("ready")
        ]
        if not waiting:
            return
        for i in waiting:
            code = fed.node_exit_code(i)
            if code is not None:
                raise FederationError(
                    f"node {i} exited with code {code} during start-up: {_tail(fed.log_path(i))}"
                )
        if time.monotonic() > deadline:
            raise FederationError(
                f"nodes {waiting} not ready after {timeout_s:.0f} s; see {fed.dir / 'logs'}"
            )
        time.sleep(0.5)


def keep_chain_awake(fed: Federation, every_s: float = 10.0) -> None:
    """Cypherium: restart the one-member node before it slows down after ~3 idle minutes.

    Checked at most every `every_s`; the restart sends no transaction, so a stalled federation
    stays stalled (no outside traffic), it only keeps the node's block rate.
    """
    if (
        fed.devnet.kind != "cypherium"
        or not fed.restart_idle_chain
        or time.monotonic() - fed._last_wake < every_s
    ):
        return
    from localnet.chain import wake_chain

    fed._last_wake = time.monotonic()
    devnet = wake_chain(fed.devnet)
    if devnet is not fed.devnet:
        fed.devnet = devnet
        fed.record()


def open_first_round(fed: Federation) -> None:
    """The launcher opens round 1 (with the admin wallet) once every node is ready."""
    client = fed.devnet.client(fed.devnet.load_admin())
    if client.current_round() == 0:
        client.open_round()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


def rounds_done(fed: Federation) -> dict[int, str]:
    """{round: "finalized" | "failed"} for every round that is final on-chain."""
    from chain import types as ev
    from chain.events import EventReader

    out: dict[int, str] = {}
    for e in EventReader(fed.client()).read(fed.devnet.deploy_block):
        if isinstance(e, ev.RoundFinalized):
            out[e.round] = "finalized"
        elif isinstance(e, ev.RoundFailed):
            out[e.round] = "failed"
    return out


def wait_rounds(
    fed: Federation, rounds: int, timeout_s: float, restart_crashed: bool = False, progress: bool = True
) -> dict[int, str]:
    """Follow the federation until ``rounds`` rounds are final and every live node reported on the last."""
    deadline = time.monotonic() + timeout_s
    last_line = ""
    evaluated_at: float | None = None
    while True:
        keep_chain_awake(fed)
        for i in range(len(fed.sites)):
            code = fed.node_exit_code(i)
            if code is None or i not in fed._procs:
                continue
            if restart_crashed and code == RESTART_EXIT_CODE:
                if progress:
                    print(f"node {i} crashed on purpose (a test behaviour); restarting it", flush=True)
                fed.restarts[i] = fed.restarts.get(i, 0) + 1
                fed.start_node(i)
            elif i not in fed.exited:
                fed.exited[i] = code
                if progress or code != RESTART_EXIT_CODE:
                    print(f"node {i} exited with code {code}: {_tail(fed.log_path(i))}", flush=True)
        done = rounds_done(fed)
        live = [i for i in range(len(fed.sites)) if fed.node_exit_code(i) is None]
        reported = True
        if done.get(rounds) == "finalized":
            # every live node evaluated the last global adapter and its MetricsReported is mined
            # (the summary reads accuracies from the chain; on Cypherium that takes a block);
            # a report still missing REPORT_GRACE_S after the evaluations is given up on
            last = [fed.metrics(i).get(str(rounds)) for i in live]
            evaluated = all(m is not None for m in last)
            reported = evaluated and all(m.get("reported") for m in last if m is not None)
            if evaluated and not reported:
                evaluated_at = evaluated_at or time.monotonic()
                reported = time.monotonic() - evaluated_at > REPORT_GRACE_S
        if progress:
            line = _progress_line(fed, done)
            if line != last_line:
                print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                last_line = line
        if len(done) >= rounds and reported:
            return done
        if not live:
            raise FederationError(f"every node has exited; see {fed.dir / 'logs'}")
        if time.monotonic() > deadline:
            raise FederationError(
                f"only {len(done)} of {rounds} rounds final after {timeout_s:.0f} s; see logs"
            )
        time.sleep(1.0)


def _progress_line(fed: Federation, done: dict[int, str]) -> str:
    parts = []
    for i in range(len(fed.sites)):
        s = fed.status(i)
        parts.append(
            f"{fed.sites[i].name}: r{s.get('round', '-')} {s.get('phase', 'starting')}/{s.get('role', '-')}"
            f" ({s.get('activity', 'loading')})"
        )
    final = ", ".join(f"r{r} {st}" for r, st in sorted(done.items())) or "none"
    return f"final: {final} | " + " | ".join(parts)


def _fair(acc: Mapping[str, float]) -> dict[str, float]:
    vals = list(acc.values())
    if not vals:
        return {"macro_acc": 0.0, "min_acc": 0.0, "hmean": 0.0}
    hmean = 0.0 if min(vals) <= 0 else len(vals) / sum(1.0 / v for v in vals)
    return {"macro_acc": sum(vals) / len(vals), "min_acc": min(vals), "hmean": hmean}


def summarize(fed: Federation) -> dict[str, Any]:
    """summary.json: base accuracy from the nodes' own evaluations, rounds from chain events."""
    from chain import types as ev
    from chain.events import EventReader

    names = {a.lower(): s.name for a, s in zip(fed.devnet.addresses, fed.sites, strict=True)}
    from node.metric_report import decode_report

    base_acc, base_loss = {}, {}
    for i, site in enumerate(fed.sites):
        m = fed.metrics(i).get("0")
        if m is not None and m.get("metric") == "sft":
            base_loss[site.name] = float(m["loss"])
        elif m is not None:
            base_acc[site.name] = float(m["accuracy"])
    rounds: dict[int, dict[str, Any]] = {}
    submissions: dict[tuple[int, int], str] = {}
    client = fed.client()
    opened_at: dict[int, float] = {}
    for e in EventReader(client).read(fed.devnet.deploy_block):
        if isinstance(e, ev.RoundOpened):
            opened_at[e.round] = _block_time(client, e.block_number)
        elif isinstance(e, ev.AggregateSubmitted):
            submissions[(e.round, e.attempt)] = e.aggregator
        elif isinstance(e, ev.RoundFinalized):
            rounds[e.round] = {
                "round": e.round,
                "attempts": e.attempt + 1,
                "aggregator": submissions.get((e.round, e.attempt)),
                "global_sha256": bytes(e.global_sha256).hex(),
                "accuracy": {},
                "loss": {},
                "rewards": {},
                "wall_s": _block_time(client, e.block_number) - opened_at.get(e.round, math.nan),
            }
        elif isinstance(e, ev.RoundFailed):
            rounds[e.round] = {
                "round": e.round,
                "attempts": e.attempts,
                "aggregator": None,
                "global_sha256": None,
                "accuracy": {},
                "loss": {},
                "rewards": {},
                "wall_s": _block_time(client, e.block_number) - opened_at.get(e.round, math.nan),
            }
        elif isinstance(e, ev.RewardPaid) and e.round in rounds:
            r = rounds[e.round]["rewards"]
            r[e.to] = r.get(e.to, 0) + int(e.amount)
        elif isinstance(e, ev.MetricsReported) and e.round in rounds:
            who = names.get(e.member.lower(), e.member)
            what = decode_report(bytes(e.eval_set_hash), e.accuracy_ppm)
            if what["kind"] == "sft":  # a chat site's held-out loss (node.metric_report)
                rounds[e.round]["loss"][who] = what["value"]
            else:
                rounds[e.round]["accuracy"][who] = e.accuracy_ppm / 1_000_000
    out_rounds = []
    for r in sorted(rounds):
        item = rounds[r]
        out_rounds.append(
            {
                "round": item["round"],
                "attempts": item["attempts"],
                "aggregator": item["aggregator"],
                "global_sha256": item["global_sha256"],
                "accuracy": dict(sorted(item["accuracy"].items())),
                **_fair(item["accuracy"]),
                **({"loss": dict(sorted(item["loss"].items()))} if item["loss"] else {}),
                "rewards": dict(sorted(item["rewards"].items())),
                "wall_s": round(item["wall_s"], 1),
                "slowest_train_s": round(slowest_training(fed, r), 1),
            }
        )
    base: dict[str, Any] = {"accuracy": dict(sorted(base_acc.items())), **_fair(base_acc)}
    if base_loss:
        base["loss"] = dict(sorted(base_loss.items()))
    return {"base": base, "rounds": out_rounds}


def _block_time(client: Any, number: int) -> float:
    """A block's timestamp in unix seconds (Cypherium's are in milliseconds)."""
    return float(client.chain_to_seconds(int(client.w3.eth.get_block(number)["timestamp"])))


def slowest_training(fed: Federation, round: int) -> float:
    """The longest local training of ``round`` among the sites (each node's own measurement)."""
    from node.state import StateStore

    longest = 0.0
    for i, address in enumerate(fed.devnet.addresses):
        store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, address)
        try:
            longest = max(longest, store.timings(round).get("train", 0.0))
        finally:
            store.close()
    return longest


def print_table(summary: Mapping[str, Any]) -> None:
    """The per-institution accuracy table, one row per round."""
    names = sorted(summary["base"]["accuracy"]) or sorted(
        {k for r in summary["rounds"] for k in r["accuracy"]}
    )

    def row(label: str, r: Mapping[str, Any]) -> str:
        cells = "".join(f"{r['accuracy'].get(n, float('nan')):>17.3f}" for n in names)
        return f"{label:<8}{cells}{r['macro_acc']:>8.3f}{r['min_acc']:>8.3f}{r['hmean']:>8.3f}"

    if names:  # multiple-choice sites (chat sites report a loss, below)
        head = (
            f"{'round':<8}" + "".join(f"{n[:16]:>17}" for n in names) + f"{'Macro':>8}{'Min':>8}{'H-mean':>8}"
        )
        print(head)
        print("-" * len(head))
        print(row("base", summary["base"]))
        for r in summary["rounds"]:
            label = f"r{r['round']}" + ("" if r["global_sha256"] else " FAIL")
            print(row(label, r))
    loss_names = sorted(summary["base"].get("loss", {}))
    if loss_names:  # chat (SFT) sites: held-out loss, lower is better
        print(("\n" if names else "") + "held-out loss (nats per reply token)")
        print(f"{'round':<8}" + "".join(f"{n[:16]:>17}" for n in loss_names))
        for label, r in [("base", summary["base"])] + [(f"r{x['round']}", x) for x in summary["rounds"]]:
            print(
                f"{label:<8}"
                + "".join(f"{r.get('loss', {}).get(n, float('nan')):>17.4f}" for n in loss_names)
            )
    print()
    for r in summary["rounds"]:
        print(
            f"round {r['round']}: {r['wall_s']:.1f} s from opening to its outcome on-chain; "
            f"slowest site trained {r['slowest_train_s']:.1f} s"
        )


def write_summary(fed: Federation) -> dict[str, Any]:
    """Collect, write D/summary.json and return it."""
    summary = summarize(fed)
    tmp = fed.dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(fed.dir / SUMMARY_FILE)
    return summary


def down(dir: str | Path) -> list[str]:
    """Stop every process `up` started in ``dir`` (nodes, explorer, anvil); return what was stopped."""
    from localnet.chain import DevnetError, stop_devnet

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
    return stopped


def _chain_kind(chain_dir: Path) -> str:
    try:
        return str(json.loads((chain_dir / "deployment.json").read_text()).get("chain", "anvil"))
    except (OSError, ValueError):
        return "anvil"


def _wait_gone(pid: int, timeout_s: float = 15.0) -> None:
    end = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if pid_alive(pid):
        _kill_group(pid, signal.SIGKILL)


def run_up(
    dir: str | Path,
    nodes: int,
    rounds: int,
    model: str,
    fresh: bool,
    keep: bool,
    timeout_s: float | None = None,
    strategy: str = "fedavg",
    chain: str = "anvil",
    genesis: str = "istanbul",
    data: str | None = None,
    monitoring: bool = False,
    privacy: Mapping[int, str] | None = None,
) -> int:
    """`medfed-localnet up`: the whole federation, its progress, summary.json and the table."""
    t0 = time.monotonic()
    if chain == "cypherium":
        print(f"starting a Cypherium node (genesis {genesis}) from ../shared/cypherium ...", flush=True)
    fed = launch(
        dir,
        nodes,
        rounds,
        model=model,
        fresh=fresh,
        strategy=strategy,
        chain=chain,
        genesis=genesis,
        data=data,
        monitoring=monitoring,
        privacy=privacy,
    )
    sizing = sizing_for(model, chain)
    per_round = sizing.commit_s + sizing.aggregate_s + sizing.verify_s
    budget = timeout_s or (600 + rounds * per_round * sizing.max_attempts)
    try:
        print("waiting for every node to load its model and evaluate the initial adapter ...", flush=True)
        wait_ready(fed, 900)
        open_first_round(fed)
        print(f"round 1 opened ({time.monotonic() - t0:.0f} s after start)", flush=True)
        done = wait_rounds(fed, rounds, budget)
        summary = write_summary(fed)
        print()
        print_table(summary)
        print(f"\nwrote {fed.dir / SUMMARY_FILE} ({time.monotonic() - t0:.0f} s in all)")
    except BaseException:
        keep = False  # a failed or interrupted run leaves nothing behind
        raise
    finally:
        for i in list(fed._procs):
            fed.stop_node(i)
        fed.record()
        if not keep:
            down(fed.dir)
    if keep:
        where = f" explorer {fed.explorer_url} and" if fed.explorer_url else ""
        print(f"the{where} devnet stay up; stop them with `medfed-localnet down --dir {dir}`")
    failed = [r for r, st in done.items() if st != "finalized"]
    if failed:
        print(f"rounds {failed} FAILED; see {fed.dir / 'logs'}", file=sys.stderr)
        return 1
    return 0


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
    from localnet.chain import DevnetError, devnet_running, load_devnet

    try:
        devnet = load_devnet(root / "chain")
    except DevnetError:
        return lines
    kind = devnet.kind + (f" (genesis {devnet.genesis})" if devnet.genesis else "")
    alive = "running" if devnet_running(root / "chain") else "stopped"
    lines.append(f"chain {kind} {devnet.rpc_url} pid {devnet.chain_pid} {alive}")
    return lines


def dataclass_dict(s: Sizing) -> dict[str, Any]:
    """A Sizing as a plain dict (for logs and the benchmark)."""
    return dataclasses.asdict(s)


def add_federation_commands(sub: Any) -> None:
    """`up` / `down` / `status` for `medfed-localnet`."""
    from localnet.cli import add_chain_choice

    up = sub.add_parser("up", help="a whole local federation: devnet, N nodes, R rounds, summary.json")
    add_chain_choice(up)
    up.add_argument("--nodes", type=int, default=3, help="institutions (default 3: one per dataset)")
    up.add_argument("--rounds", type=int, default=2, help="rounds to finalize (default 2)")
    up.add_argument(
        "--model", default="default", help='"default" (SmolLM2-135M) or "tiny" (default: default)'
    )
    up.add_argument("--dir", required=True, help="folder for the chain, nodes, logs and summary.json")
    up.add_argument("--fresh", action="store_true", help="replace a federation already in --dir")
    up.add_argument("--stop", action="store_true", help="also stop the devnet and explorer at the end")
    up.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    up.add_argument(
        "--strategy",
        choices=["fedavg", "exact"],
        default="fedavg",
        help="aggregation strategy (default fedavg)",
    )
    up.add_argument(
        "--data",
        default=None,
        help="sites file: [[site]] tables with name, train, eval ([data] entries) for your own data",
    )
    up.add_argument(
        "--monitoring", action="store_true", help="each node serves /metrics and /healthz on a free port"
    )
    up.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help="DP-SGD at the sites, each within this epsilon over --rounds (docs/privacy.md)",
    )
    up.add_argument(
        "--dp-sites", type=int, default=None, help="with --dp-epsilon: the first N nodes (default all)"
    )
    up.set_defaults(func=_up)
    dn = sub.add_parser("down", help="stop everything `up` started in --dir (nodes, explorer, chain)")
    dn.add_argument("--dir", required=True)
    dn.set_defaults(func=_down)
    st = sub.add_parser("status", help="the processes of the federation in --dir and each node's phase")
    st.add_argument("--dir", required=True)
    st.set_defaults(func=_status)


def _up(args: Any) -> int:
    from localnet.cli import chain_genesis

    if args.rounds < 1:
        raise FederationError("--rounds must be >= 1")
    return run_up(
        args.dir,
        args.nodes,
        args.rounds,
        args.model,
        args.fresh,
        not args.stop,
        args.timeout,
        args.strategy,
        chain=args.chain,
        genesis=chain_genesis(args),
        data=args.data,
        monitoring=args.monitoring,
        privacy=dp_sections(args.nodes, args.rounds, args.dp_epsilon, args.dp_sites),
    )


def dp_sections(nodes: int, rounds: int, epsilon: float | None, sites: int | None) -> dict[int, str]:
    """node -> a [privacy] section training with DP-SGD within ``epsilon`` over ``rounds`` (issue 20)."""
    if epsilon is None:
        return {}
    if epsilon <= 0:
        raise FederationError("--dp-epsilon must be > 0")
    section = f'\n[privacy]\nmode = "dp-sgd"\ntarget_epsilon = {epsilon!r}\nrounds = {rounds}\n'
    return {i: section for i in range(nodes if sites is None else min(sites, nodes))}


def _down(args: Any) -> int:
    stopped = down(args.dir)
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _status(args: Any) -> int:
    for line in status_lines(args.dir):
        print(line)
    return 0
