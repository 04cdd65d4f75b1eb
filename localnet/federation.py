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
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chain.types import DeployParams
from localnet import netns as netns_mod
from localnet.chain import DevnetError
from localnet.errors import FederationError
from localnet.nodeconfig import free_port, node_config_text
from localnet.processes import (
    PROCESSES_FILE,
    RESTART_EXIT_CODE,
    Federation,
    _tail,
    down,
    status_lines,
)
from localnet.sites import SOURCES, Site, load_site_plan, plan_sites
from localnet.sizing import DEFAULT_SIZING, TINY_SIZING, Sizing, dataclass_dict, sizing_for
from localnet.summary import SUMMARY_FILE, print_table, summarize, write_summary

# re-exported: callers (tests, bench) use `localnet.federation` as the launcher's one namespace
__all__ = [
    "DEFAULT_SIZING",
    "PROCESSES_FILE",
    "RESTART_EXIT_CODE",
    "SOURCES",
    "SUMMARY_FILE",
    "TINY_SIZING",
    "Federation",
    "FederationError",
    "Site",
    "Sizing",
    "build_initial_adapter",
    "dataclass_dict",
    "down",
    "free_port",
    "keep_chain_awake",
    "launch",
    "load_site_plan",
    "node_config_text",
    "open_first_round",
    "plan_sites",
    "print_table",
    "rounds_done",
    "run_up",
    "sizing_for",
    "status_lines",
    "summarize",
    "wait_ready",
    "wait_rounds",
    "write_summary",
]

log = logging.getLogger("medfed.localnet")


REPORT_GRACE_S = 60.0  # how long `up` waits for the last round's on-chain metrics after evaluation


INITIAL_SEED = 0  # must equal node.daemon.INITIAL_SEED


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
    netns: bool = False,
    firewalled: int = 0,
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
    ``netns``: every site in a network namespace of its own, the last ``firewalled`` of them
    behind a firewall that drops inbound connections (localnet/netns.py); the others relay;
    ``privacy``: node -> a ``[privacy]`` TOML section appended to its medfed.toml (docs/privacy.md)."""
    from localnet.chain import DEVNET_PARAMS, start_devnet

    root = Path(dir).resolve()
    net = None
    if firewalled and not netns:
        raise FederationError("--firewalled needs --netns (sites in network namespaces of their own)")
    if netns:
        netns_mod.check_available(firewalled, forward=chain != "anvil")
        net = netns_mod.plan(root, nodes, firewalled)
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
    with netns_mod.set_up(root, net):
        if net is not None:
            print(
                f"network namespaces {net.ns(0)}..{net.ns(nodes - 1)} on bridge {net.bridge} "
                f"({net.subnet}.0/24); behind a firewall: {list(net.firewalled) or 'none'}",
                flush=True,
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
            net=net,
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
                **(net.p2p(i) if net is not None else {}),
            )
            + (privacy or {}).get(i, "")  # issue 20: a [privacy] section for this node
        )
        configs.append(cfg)
        states.append(d / "state")
    fed = Federation(
        root, devnet, sites, configs, states, behaviours=dict(behaviours or {}), monitoring_ports=ports
    )
    fed.pending_admission = set(range(members, nodes)) if members is not None else set()
    fed.netns = net
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
    netns: bool = False,
    firewalled: int = 0,
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
        netns=netns,
        firewalled=firewalled,
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
