"""The chain part of the local devnet: anvil + a deployed federation + N funded, admitted wallets.

`start_devnet(dir, nodes)` writes `dir/deployment.json` (the stable interface for scripts and
nodes) and leaves anvil running in its own session; `stop_devnet(dir)` stops exactly that anvil.
Wallet passwords: one random password in `dir/password.txt` (mode 0600) unlocks every devnet
wallet; a devnet convenience, never how a real site stores its key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import DEVNET
from chain.types import ChainEvent, DeployParams, Phase
from chain.wallet import DEVNET_SCRYPT_N, Wallet, create_wallet, load_wallet
from localnet.anvil import AnvilError, is_anvil, rpc, set_balance, start_anvil, stop_anvil

log = logging.getLogger(__name__)

DEPLOYMENT_FILE = "deployment.json"
# Placeholder initial adapter for `chain up` on its own: `medfed-localnet up` passes the real
# initial adapter's sha256/CID.
PLACEHOLDER_SHA256 = hashlib.sha256(b"medfed placeholder initial adapter").digest()
PLACEHOLDER_CID = "placeholder-initial-adapter"
PLACEHOLDER_BASE_MODEL = "placeholder"
PLACEHOLDER_LORA_CONFIG_HASH = b"\x00" * 31 + b"\x01"
ADMIN_ETH_WEI = 10_000 * 10**18
NODE_ETH_WEI = 100 * 10**18
DEVNET_PARAMS = DeployParams(commit_duration_s=60, aggregate_duration_s=60, verify_duration_s=30)


class DevnetError(RuntimeError):
    """The devnet could not be started, found or stopped; the message names the fix."""


@dataclass(frozen=True)
class Devnet:
    """A running devnet as recorded in `dir/deployment.json`."""

    dir: Path
    rpc_url: str
    chain_id: int
    coordinator: str
    token: str
    deploy_block: int
    wallets: tuple[Path, ...]
    addresses: tuple[str, ...]
    password_file: Path
    admin_wallet: Path
    admin: str
    anvil_pid: int
    params: DeployParams
    base_model: str
    initial_sha256: bytes
    initial_cid: str
    lora_config_hash: bytes

    @property
    def deployment_file(self) -> Path:
        return self.dir / DEPLOYMENT_FILE

    def password(self) -> str:
        """The devnet wallet password."""
        return self.password_file.read_text().rstrip("\r\n")

    def load_wallet(self, index: int) -> Wallet:
        """Unlock node wallet `index`."""
        return load_wallet(self.wallets[index], self.password())

    def load_admin(self) -> Wallet:
        return load_wallet(self.admin_wallet, self.password())

    def client(self, wallet: Wallet | None = None) -> CoordinatorClient:
        """A coordinator client on this devnet (views only without a wallet)."""
        return CoordinatorClient(self.rpc_url, self.coordinator, wallet, DEVNET)


def start_devnet(
    dir: str | Path,
    nodes: int = 3,
    params: DeployParams = DEVNET_PARAMS,
    *,
    port: int = 0,
    initial_sha256: bytes = PLACEHOLDER_SHA256,
    initial_cid: str = PLACEHOLDER_CID,
    base_model: str = PLACEHOLDER_BASE_MODEL,
    lora_config_hash: bytes = PLACEHOLDER_LORA_CONFIG_HASH,
    block_time_s: float | None = 1.0,
    fresh: bool = False,
) -> Devnet:
    """Start anvil, deploy, create/fund/admit `nodes` wallets, write `dir/deployment.json`.

    `block_time_s` mines an empty block that often besides mining every transaction at once,
    so views follow the wall clock; None mines only on transactions (tests that move time
    with evm_increaseTime). `fresh` stops a devnet already recorded in `dir` and replaces it.
    """
    root = Path(dir).resolve()
    if not 1 <= nodes <= 96:
        raise DevnetError(f"--nodes {nodes}: choose 1..96")
    existing = root / DEPLOYMENT_FILE
    if existing.exists():
        if not fresh:
            raise DevnetError(
                f"{existing} exists: run `medfed-localnet chain down --dir {dir}` first (or pass --fresh)"
            )
        stop_devnet(root)
    root.mkdir(parents=True, exist_ok=True)
    wallet_dir = root / "wallets"
    if wallet_dir.exists() and any(wallet_dir.iterdir()):
        if not fresh:
            raise DevnetError(f"{wallet_dir} holds old wallets: delete it or pass --fresh")
        for old in wallet_dir.glob("*.json"):
            old.unlink()
    wallet_dir.mkdir(exist_ok=True)
    password_file = root / "password.txt"
    password = secrets.token_urlsafe(18)
    _write_private(password_file, password + "\n")

    anvil = start_anvil(root / "anvil.log", port, block_time_s=block_time_s)
    log.info("anvil %d listening on %s", anvil.pid, anvil.rpc_url)
    try:
        admin_path = wallet_dir / "admin.json"
        admin = create_wallet(admin_path, password, scrypt_n=DEVNET_SCRYPT_N)
        set_balance(anvil.rpc_url, admin.address, ADMIN_ETH_WEI)
        deployment = deploy_federation(
            anvil.rpc_url, admin, params, initial_sha256, initial_cid, base_model, lora_config_hash, DEVNET
        )
        log.info("coordinator %s deployed in block %d", deployment.coordinator, deployment.deploy_block)
        client = CoordinatorClient(anvil.rpc_url, deployment.coordinator, admin, DEVNET)
        paths: list[Path] = []
        addresses: list[str] = []
        for i in range(nodes):
            path = wallet_dir / f"node{i}.json"
            wallet = create_wallet(path, password, scrypt_n=DEVNET_SCRYPT_N)
            client.send_eth(wallet.address, NODE_ETH_WEI)
            client.add_member(wallet.address)
            paths.append(path)
            addresses.append(wallet.address)
            log.info("node %d: %s funded and admitted", i, wallet.address)
        devnet = Devnet(
            dir=root,
            rpc_url=anvil.rpc_url,
            chain_id=deployment.chain_id,
            coordinator=deployment.coordinator,
            token=deployment.token,
            deploy_block=deployment.deploy_block,
            wallets=tuple(paths),
            addresses=tuple(addresses),
            password_file=password_file,
            admin_wallet=admin_path,
            admin=admin.address,
            anvil_pid=anvil.pid,
            params=params,
            base_model=base_model,
            initial_sha256=bytes(initial_sha256),
            initial_cid=initial_cid,
            lora_config_hash=bytes(lora_config_hash),
        )
        _write_deployment(devnet, anvil.log_path)
        return devnet
    except BaseException:
        stop_anvil(anvil.pid)
        raise


def load_devnet(dir: str | Path) -> Devnet:
    """The devnet recorded in `dir/deployment.json`."""
    path = Path(dir).resolve() / DEPLOYMENT_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise DevnetError(
            f"{path}: no devnet here: start one with `medfed-localnet chain up --dir {dir}`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DevnetError(f"{path}: unreadable ({exc}): stop anvil by hand and delete the dir") from None
    root = path.parent
    return Devnet(
        dir=root,
        rpc_url=data["rpc_url"],
        chain_id=int(data["chain_id"]),
        coordinator=data["coordinator"],
        token=data["token"],
        deploy_block=int(data["deploy_block"]),
        wallets=tuple(root / p if not Path(p).is_absolute() else Path(p) for p in data["wallets"]),
        addresses=tuple(data["addresses"]),
        password_file=Path(data["password_file"]),
        admin_wallet=Path(data["admin_wallet"]),
        admin=data["admin"],
        anvil_pid=int(data["anvil_pid"]),
        params=DeployParams(**data["params"]),
        base_model=data["base_model"],
        initial_sha256=bytes.fromhex(data["initial_sha256"]),
        initial_cid=data["initial_cid"],
        lora_config_hash=bytes.fromhex(data["lora_config_hash"]),
    )


def stop_devnet(dir: str | Path) -> bool:
    """Stop the anvil recorded in `dir/deployment.json`; True if it was running.

    Leaves the files (wallets, logs) in place and marks the deployment stopped by renaming
    deployment.json to deployment.stopped.json. Refuses (DevnetError) if the recorded pid
    now belongs to something other than anvil.
    """
    devnet = load_devnet(dir)
    try:
        was_running = stop_anvil(devnet.anvil_pid)
    except AnvilError as exc:
        raise DevnetError(str(exc)) from None
    devnet.deployment_file.replace(devnet.dir / "deployment.stopped.json")
    return was_running


def devnet_running(dir: str | Path) -> bool:
    """True when `dir` records a devnet whose anvil is alive."""
    try:
        devnet = load_devnet(dir)
    except DevnetError:
        return False
    return is_anvil(devnet.anvil_pid)


def scripted_round(devnet: Devnet, warp: bool = True) -> list[ChainEvent]:
    """One full round on the contract with stand-in hashes (a chain-only demo).

    Every node wallet commits sha256(b"demo update ..."), the elected aggregator submits, the
    others approve, and the round is finalized. The last commit closes the commit phase (every
    member committed); should it still be open, `warp` jumps anvil's clock over the commit
    deadline instead of waiting for it. Returns the coordinator events emitted, in order.
    """
    admin = devnet.client(devnet.load_admin())
    clients = [admin.with_wallet(devnet.load_wallet(i)) for i in range(len(devnet.wallets))]
    events: list[ChainEvent] = []
    events += admin.open_round().events
    r = admin.current_round()
    hashes = {}
    for i, c in enumerate(clients):
        h = hashlib.sha256(f"demo update {i} round {r}".encode()).digest()
        hashes[c.sender_address] = h
        events += c.commit_update(r, h, f"demo-update-{i}-round-{r}", 100 + i).events
    # when every member committed, the last commit already closed the phase and elected the aggregator
    info = admin.round_info()
    if info.phase == Phase.COMMIT and warp:
        rpc(devnet.rpc_url, "evm_mine", [max(info.commit_deadline, admin.chain_time() + 1)])
    elif info.phase == Phase.COMMIT:
        while admin.chain_time() < info.commit_deadline:
            time.sleep(0.5)
    aggregator = admin.aggregator_of(r)
    agg = next(c for c in clients if c.sender_address == aggregator)
    digest = hashlib.sha256(b"".join(hashes[a] for a in sorted(hashes, key=lambda a: int(a, 16)))).digest()
    events += agg.submit_aggregate(r, digest, f"demo-aggregate-round-{r}", list(hashes)).events
    for c in clients:
        if c is not agg:
            events += c.vote(r, True).events
    events += admin.finalize(r).events
    return events


def _write_deployment(devnet: Devnet, anvil_log: Path) -> None:
    data = {
        "rpc_url": devnet.rpc_url,
        "chain_id": devnet.chain_id,
        "coordinator": devnet.coordinator,
        "token": devnet.token,
        "deploy_block": devnet.deploy_block,
        "wallets": [str(p) for p in devnet.wallets],
        "addresses": list(devnet.addresses),
        "password_file": str(devnet.password_file),
        "admin_wallet": str(devnet.admin_wallet),
        "admin": devnet.admin,
        "anvil_pid": devnet.anvil_pid,
        "anvil_log": str(anvil_log),
        "profile": DEVNET.name,
        "time_unit_ms": False,
        "params": dataclasses.asdict(devnet.params),
        "base_model": devnet.base_model,
        "initial_sha256": devnet.initial_sha256.hex(),
        "initial_cid": devnet.initial_cid,
        "lora_config_hash": devnet.lora_config_hash.hex(),
    }
    tmp = devnet.deployment_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(devnet.deployment_file)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def new_account() -> Wallet:
    """A fresh in-memory key (tests, benchmarks)."""
    acct = Account.create()
    return Wallet(address=acct.address, private_key=bytes(acct.key))
