"""`medfed-localnet chain up --netns [--firewalled K] [--model M]`: the devnet with a medfed.toml per
site for an operator to start each node by hand, each in its network namespace (issue 19).

Writes ``D/sites/node<i>/medfed.toml`` (the chain RPC as the site reaches it, its [p2p] settings
from localnet/netns.py: its own address, private behind the firewall or relaying) and the
federation's real initial adapter in ``D/initial`` (deployed on-chain, so the sites can train),
and returns the command that starts each site. `chain down` removes what `--netns` set up.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from chain.types import DeployParams
from localnet import netns
from localnet.chain import (
    DEPLOYMENT_FILE,
    PLACEHOLDER_BASE_MODEL,
    PLACEHOLDER_CID,
    PLACEHOLDER_LORA_CONFIG_HASH,
    PLACEHOLDER_SHA256,
    Devnet,
    DevnetError,
    start_devnet,
    stop_devnet,
)
from localnet.nodeconfig import node_config_text
from localnet.sites import plan_sites
from localnet.sizing import sizing_for

SITES_DIR = "sites"


@dataclass(frozen=True)
class ChainSites:
    """A devnet started by `chain up`, with the sites' configs when asked for."""

    devnet: Devnet
    net: netns.NetPlan | None
    configs: tuple[Path, ...]  # D/sites/node<i>/medfed.toml; empty without --netns/--model

    def start_command(self, i: int) -> str:
        """The shell command that starts site i (inside its namespace with --netns)."""
        cmd = [
            *(self.net.exec_prefix(i) if self.net is not None else []),
            "medfed-node",
            "start",
            "--config",
            str(self.configs[i]),
            "--key",
            str(self.devnet.wallets[i]),
            "--password-file",
            str(self.devnet.password_file),
        ]
        if self.devnet.addresses[i] not in self.devnet.members:
            cmd.append("--wait-for-admission")
        return shlex.join(cmd)


def chain_up(
    dir: str | Path,
    nodes: int,
    params: DeployParams,
    *,
    port: int = 0,
    block_time_s: float | None = 1.0,
    fresh: bool = False,
    chain: str = "anvil",
    genesis: str = "istanbul",
    members: int | None = None,
    use_netns: bool = False,
    firewalled: int = 0,
    model: str | None = None,
    rounds: int = 2,
) -> ChainSites:
    """Start the devnet (in namespaces with ``use_netns``) and, with ``use_netns`` or ``model``,
    write a medfed.toml per site on ``model`` (default "tiny") for ``rounds`` rounds."""
    root = Path(dir).resolve()
    if firewalled and not use_netns:
        raise DevnetError("--firewalled needs --netns (sites in network namespaces of their own)")
    if rounds < 0:
        raise DevnetError("--rounds must be >= 0 (0: the sites never stop opening rounds)")
    net = None
    if use_netns:
        netns.check_available(firewalled, forward=chain != "anvil")
        net = netns.plan(root, nodes, firewalled)
    if (root / DEPLOYMENT_FILE).exists() and not fresh:
        raise DevnetError(
            f"{root / DEPLOYMENT_FILE} exists: run `medfed-localnet chain down --dir {dir}` first "
            "(or pass --fresh)"
        )
    with_sites = use_netns or model is not None
    model = model or "tiny"
    sha, cid, base, lora_hash = (
        PLACEHOLDER_SHA256.hex(),
        PLACEHOLDER_CID,
        PLACEHOLDER_BASE_MODEL,
        PLACEHOLDER_LORA_CONFIG_HASH,
    )
    sizing = sizing_for(model, chain)
    if with_sites:
        from localnet.federation import build_initial_adapter

        if fresh:
            for sub in (SITES_DIR, "initial"):
                shutil.rmtree(root / sub, ignore_errors=True)
        print(f"building the initial adapter for model {model!r} ...", flush=True)
        sha, cid, base, lora_hash = build_initial_adapter(
            model, sizing.lora_rank, sizing.lora_alpha, root / "initial"
        )
    with netns.set_up(root, net):
        devnet = start_devnet(
            root,
            nodes,
            params,
            port=port,
            block_time_s=block_time_s,
            fresh=fresh,
            chain=chain,
            genesis=genesis,
            members=members,
            net=net,
            initial_sha256=bytes.fromhex(sha),
            initial_cid=cid,
            base_model=base,
            lora_config_hash=lora_hash,
        )
    configs: list[Path] = []
    if with_sites:
        threads = max(1, (os.cpu_count() or 1) // nodes)
        for i, site in enumerate(plan_sites(nodes)):
            cfg = root / SITES_DIR / f"node{i}" / "medfed.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(
                node_config_text(
                    devnet,
                    site,
                    sizing,
                    model,
                    root / "initial" / "adapter_model.safetensors",
                    rounds,
                    threads,
                    open_first_round=True,
                    **(net.p2p(i) if net is not None else {}),
                )
            )
            configs.append(cfg)
    return ChainSites(devnet, net, tuple(configs))


def chain_down(dir: str | Path) -> tuple[str, list[str]]:
    """Stop the devnet in ``dir`` and remove its namespaces, links and iptables rules (also after
    a crash: found by the folder's tag). Returns what the chain was ("stopped", "not running",
    "already stopped" or "none": no devnet recorded) and what `--netns` left that was removed."""
    root = Path(dir).resolve()
    try:
        if (root / DEPLOYMENT_FILE).exists():
            chain = "stopped" if stop_devnet(root) else "not running"
        elif (root / "deployment.stopped.json").exists():
            chain = "already stopped"
        else:
            chain = "none"
    finally:
        removed = netns.teardown(root)  # after the chain (the RPC forward), also when it failed
    return chain, removed
