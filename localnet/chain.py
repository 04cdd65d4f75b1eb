"""The chain part of the local devnet: a chain + a deployed federation + N funded, admitted wallets.

The chain is anvil (the default, `kind="anvil"`) or a real one-member Cypherium node started
through ../shared/cypherium/start.sh (`kind="cypherium"`, datadir `dir/cypherium`).
`start_devnet(dir, nodes)` writes `dir/deployment.json` (the stable interface for scripts and
nodes) and leaves the chain running in its own session; `stop_devnet(dir)` stops exactly that chain.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from eth_account import Account

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import CYPHERIUM, DEVNET, ChainProfile
from chain.types import ChainEvent, DeployParams, Phase
from chain.wallet import DEVNET_SCRYPT_N, Wallet, create_wallet, load_wallet
from localnet import cypherium as cy
from localnet.anvil import AnvilError, is_anvil, rpc, set_balance, start_anvil, stop_anvil

if TYPE_CHECKING:  # localnet.netns imports this module (through localnet.errors)
    from localnet.netns import NetPlan

log = logging.getLogger(__name__)

T = TypeVar("T")
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
CHAINS = ("anvil", "cypherium")
CYPHERIUM_DATADIR = "cypherium"


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
    kind: str = "anvil"  # "anvil" | "cypherium"
    genesis: str | None = None  # Cypherium: "istanbul" | "official-rules"
    members: tuple[str, ...] = ()  # admitted by the constructor (issue 21)
    time_unit_ms: bool = False  # block.timestamp in milliseconds (Cypherium)
    # the RPC URL as sites in network namespaces reach it (issue 19); "" = rpc_url
    sites_rpc_url: str = ""

    @property
    def deployment_file(self) -> Path:
        return self.dir / DEPLOYMENT_FILE

    @property
    def site_rpc_url(self) -> str:
        """The RPC URL a site's medfed.toml names (the bridge's address with --netns)."""
        return self.sites_rpc_url or self.rpc_url

    @property
    def profile(self) -> ChainProfile:
        """The chain client profile for this devnet's chain."""
        return CYPHERIUM if self.kind == "cypherium" else DEVNET

    @property
    def chain_pid(self) -> int:
        """The pid of the chain process (anvil or cypher)."""
        return self.anvil_pid

    @property
    def cypherium_datadir(self) -> Path:
        return self.dir / CYPHERIUM_DATADIR

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
        return CoordinatorClient(self.rpc_url, self.coordinator, wallet, self.profile)


@dataclass(frozen=True)
class _ChainProcess:
    pid: int
    rpc_url: str
    log_path: Path


def _start_chain(
    root: Path,
    kind: str,
    genesis: str,
    port: int,
    block_time_s: float | None,
    password: str,
    net: NetPlan | None = None,
) -> tuple[_ChainProcess, Path, Wallet]:
    """Start the chain; return it with the admin keystore path and the funded admin wallet.

    With ``net`` (sites in network namespaces) anvil listens on the bridge's address; the Cypherium
    node, which listens on 127.0.0.1 only, is forwarded to it (netns.forward_rpc)."""
    admin_path = root / "wallets" / "admin.json"
    if kind == "cypherium":
        datadir = root / CYPHERIUM_DATADIR
        if (datadir / "cypher").exists():  # a chain left by a stopped devnet: start from genesis
            import shutil

            cy.stop_cypherium(datadir)
            shutil.rmtree(datadir)
        node = cy.start_cypherium(datadir, genesis, http_port=port)
        log.info("cypherium node %d (%s genesis) listening on %s", node.pid, genesis, node.rpc_url)
        try:
            if net is not None:
                from localnet.netns import forward_rpc

                forward_rpc(net, node.port)
            admin = _import_wallet(admin_path, cy.FUNDED_KEY, password)  # the chain's funded account
        except BaseException:
            cy.stop_cypherium(datadir)
            raise
        return _ChainProcess(node.pid, node.rpc_url, node.log_path), admin_path, admin
    host = net.host_ip if net is not None else "127.0.0.1"
    anvil = start_anvil(root / "anvil.log", port, block_time_s=block_time_s, host=host)
    log.info("anvil %d listening on %s", anvil.pid, anvil.rpc_url)
    try:
        admin = create_wallet(admin_path, password, scrypt_n=DEVNET_SCRYPT_N)
        set_balance(anvil.rpc_url, admin.address, ADMIN_ETH_WEI)
    except BaseException:
        stop_anvil(anvil.pid)
        raise
    return _ChainProcess(anvil.pid, anvil.rpc_url, anvil.log_path), admin_path, admin


def _stop_chain(kind: str, root: Path, pid: int) -> bool:
    if kind == "cypherium":
        try:
            return cy.stop_cypherium(root / CYPHERIUM_DATADIR)
        except cy.CypheriumError as exc:
            raise DevnetError(str(exc)) from None
    try:
        return stop_anvil(pid)
    except AnvilError as exc:
        raise DevnetError(str(exc)) from None


def _import_wallet(path: Path, private_key: str, password: str) -> Wallet:
    """Write a keystore v3 (mode 0600) for an existing key, e.g. a test chain's funded account."""
    acct = Account.from_key(private_key)
    keystore = Account.encrypt(acct.key, password, kdf="scrypt", iterations=DEVNET_SCRYPT_N)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps(keystore, indent=1))
    return Wallet(address=acct.address, private_key=bytes(acct.key))


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
    chain: str = "anvil",
    genesis: str = "istanbul",
    members: int | None = None,
    net: NetPlan | None = None,
) -> Devnet:
    """Start the chain, deploy, create/fund `nodes` wallets, admit them (the first `members` of
    them when given: the rest wait for the members' vote) and write `dir/deployment.json`.

    `chain` "anvil" (default) or "cypherium" (a real node from ../shared/cypherium with the
    `genesis` rule set, deployed from its funded account). `block_time_s` (anvil only) mines an
    empty block that often besides mining every transaction at once, so views follow the wall
    clock; None mines only on transactions (tests that move time with evm_increaseTime).
    `fresh` stops a devnet already recorded in `dir` and replaces it. `net`: the network plan of
    sites in namespaces (issue 19, already created): the chain's RPC is made reachable from them
    at the bridge's address (anvil listens there; the Cypherium node is forwarded to it), recorded
    as ``sites_rpc_url`` in deployment.json.
    """
    root = Path(dir).resolve()
    if not 1 <= nodes <= 96:
        raise DevnetError(f"--nodes {nodes}: choose 1..96")
    if members is not None and not 1 <= members <= nodes:
        raise DevnetError(f"members {members}: choose 1..{nodes}")
    if chain not in CHAINS:
        raise DevnetError(f"--chain {chain!r}: choose one of {', '.join(CHAINS)}")
    if chain == "cypherium":
        cy.cypherium_dir()  # fail early, with the fix, when the node is not there
        if genesis not in cy.GENESES:
            raise DevnetError(f"--genesis {genesis!r}: choose one of {', '.join(cy.GENESES)}")
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

    proc, admin_path, admin = _start_chain(root, chain, genesis, port, block_time_s, password, net)
    profile = CYPHERIUM if chain == "cypherium" else DEVNET
    try:
        paths: list[Path] = []
        addresses: list[str] = []
        for i in range(nodes):
            path = wallet_dir / f"node{i}.json"
            wallet = create_wallet(path, password, scrypt_n=DEVNET_SCRYPT_N)
            paths.append(path)
            addresses.append(wallet.address)
        # issue 21: the constructor admits the first `members` wallets; the deployer has no power
        # afterwards (the others are funded, for the members to vote in)
        admitted = addresses[: nodes if members is None else members]
        deployment = deploy_federation(
            proc.rpc_url,
            admin,
            params,
            initial_sha256,
            initial_cid,
            base_model,
            lora_config_hash,
            profile,
            members=admitted,
        )
        log.info("coordinator %s deployed in block %d", deployment.coordinator, deployment.deploy_block)
        client = CoordinatorClient(proc.rpc_url, deployment.coordinator, admin, profile)
        if chain == "cypherium":
            # a block per ~2 s: send every funding at once so they share blocks
            # (the client allots nonces under a lock; each thread waits for its own receipt)
            calls: list[Callable[[], object]] = [partial(client.send_eth, a, NODE_ETH_WEI) for a in addresses]
            _all_at_once(calls)
        else:
            for a in addresses:
                client.send_eth(a, NODE_ETH_WEI)
        for i, a in enumerate(addresses):
            log.info("node %d: %s funded%s", i, a, " and admitted" if a in admitted else "")
        devnet = Devnet(
            dir=root,
            rpc_url=proc.rpc_url,
            chain_id=deployment.chain_id,
            coordinator=deployment.coordinator,
            token=deployment.token,
            deploy_block=deployment.deploy_block,
            wallets=tuple(paths),
            addresses=tuple(addresses),
            password_file=password_file,
            admin_wallet=admin_path,
            admin=admin.address,
            anvil_pid=proc.pid,
            params=params,
            base_model=base_model,
            initial_sha256=bytes(initial_sha256),
            initial_cid=initial_cid,
            lora_config_hash=bytes(lora_config_hash),
            kind=chain,
            genesis=genesis if chain == "cypherium" else None,
            time_unit_ms=deployment.time_unit_ms,
            members=deployment.members,
            sites_rpc_url=net.rpc_url(proc.rpc_url) if net is not None else "",
        )
        _write_deployment(devnet, proc.log_path)
        return devnet
    except BaseException:
        _stop_chain(chain, root, proc.pid)
        raise


def _all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run blocking transactions together (threads) so that they share blocks; re-raise the first error."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), 16))) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


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
        kind=data.get("chain", "anvil"),
        genesis=data.get("genesis"),
        time_unit_ms=bool(data.get("time_unit_ms", False)),
        members=tuple(data.get("members", data["addresses"])),
        sites_rpc_url=str(data.get("sites_rpc_url") or ""),
    )


def stop_devnet(dir: str | Path) -> bool:
    """Stop the chain recorded in `dir/deployment.json`; True if it was running.

    Leaves the files (wallets, logs, the Cypherium datadir) in place and marks the deployment
    stopped by renaming deployment.json to deployment.stopped.json. Refuses (DevnetError) if the
    recorded anvil pid now belongs to something else; a Cypherium node is stopped by stop.sh.
    """
    devnet = load_devnet(dir)
    was_running = _stop_chain(devnet.kind, devnet.dir, devnet.anvil_pid)
    devnet.deployment_file.replace(devnet.dir / "deployment.stopped.json")
    return was_running


def devnet_running(dir: str | Path) -> bool:
    """True when `dir` records a devnet whose chain (anvil or cypher) is alive."""
    try:
        devnet = load_devnet(dir)
    except DevnetError:
        return False
    return cy.is_cypher(devnet.anvil_pid) if devnet.kind == "cypherium" else is_anvil(devnet.anvil_pid)


def wake_chain(devnet: Devnet) -> Devnet:
    """Cypherium only: restart a node idle for longer than its slow-down threshold (same RPC URL).

    Returns the devnet with the (possibly new) node pid; sends nothing and makes no block.
    """
    if devnet.kind != "cypherium" or devnet.genesis is None:
        return devnet
    port = int(devnet.rpc_url.rsplit(":", 1)[1])
    node = cy.CypheriumNode(devnet.anvil_pid, devnet.rpc_url, port, devnet.cypherium_datadir)
    try:
        new = cy.restart_if_idle(node, devnet.genesis)
    except cy.CypheriumError as exc:
        raise DevnetError(str(exc)) from None
    if new.pid == devnet.anvil_pid:
        return devnet
    log.info(
        "cypherium node made no block for %.0f s: restarted it before it slows down (pid %d)",
        cy.IDLE_RESTART_S,
        new.pid,
    )
    _rewrite_pid(devnet, new.pid)
    return dataclasses.replace(devnet, anvil_pid=new.pid)


def _rewrite_pid(devnet: Devnet, pid: int) -> None:
    data = json.loads(devnet.deployment_file.read_text())
    data["anvil_pid"] = data["chain_pid"] = pid
    tmp = devnet.deployment_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(devnet.deployment_file)


def scripted_round(devnet: Devnet, warp: bool = True, wait_limit_s: float = 60.0) -> list[ChainEvent]:
    """One full round on the contract with stand-in hashes (a chain-only demo).

    Every node wallet commits sha256(b"demo update ..."), the elected aggregator submits, the
    others approve, and the round is finalized. The last commit closes the commit phase (every
    member committed) and `advance` draws the aggregator in a later block; should the phase still
    be open, `warp` jumps anvil's clock over the commit deadline instead of waiting for it
    (Cypherium cannot warp: it always waits). The wait follows the wall clock, not the latest
    block (which stands still on a quiet Cypherium chain).
    Returns the coordinator events emitted, in order.
    """
    wake_chain(devnet)
    together = devnet.kind == "cypherium"  # a block per ~2 s: let transactions share blocks
    admin = devnet.client(devnet.load_admin())
    clients = [admin.with_wallet(devnet.load_wallet(i)) for i in range(len(devnet.wallets))]
    events: list[ChainEvent] = []
    events += admin.open_round().events
    r = admin.current_round()
    hashes = {
        c.sender_address: hashlib.sha256(f"demo update {i} round {r}".encode()).digest()
        for i, c in enumerate(clients)
    }
    commits = [
        partial(c.commit_update, r, hashes[c.sender_address], f"demo-update-{i}-round-{r}", 100 + i)
        for i, c in enumerate(clients)
    ]
    events += _events(_all_at_once(commits) if together else [call() for call in commits])
    # when every member committed, the last commit already closed the phase (it moved the commit
    # deadline to its block's time); the election is drawn in a later block, from that block's
    # hash: the advance below (on a quiet chain nothing else makes a block)
    info = admin.round_info()
    if info.phase == Phase.COMMIT:
        deadline = info.commit_deadline
        if warp and devnet.kind == "anvil":
            rpc(devnet.rpc_url, "evm_mine", [max(deadline, admin.chain_time() + 1)])
        else:
            wait_for_deadline(admin, deadline, devnet.params.commit_duration_s + wait_limit_s)
        events += admin.advance(r).events
    aggregator = admin.aggregator_of(r)
    agg = next(c for c in clients if c.sender_address == aggregator)
    digest = hashlib.sha256(b"".join(hashes[a] for a in sorted(hashes, key=lambda a: int(a, 16)))).digest()
    events += agg.submit_aggregate(r, digest, f"demo-aggregate-round-{r}", list(hashes)).events
    votes = [partial(c.vote, r, True) for c in clients if c is not agg]
    events += _events(_all_at_once(votes) if together else [call() for call in votes])
    events += admin.finalize(r).events
    return events


def _events(results: list[Any]) -> list[ChainEvent]:
    return [e for res in results for e in res.events]


def wait_for_deadline(client: CoordinatorClient, deadline: int, limit_s: float) -> None:
    """Sleep until `deadline` (chain units) has passed on the wall clock or on the chain.

    A chain that makes blocks only on demand (Cypherium) keeps its latest timestamp frozen, so
    the wall clock decides; the transaction sent next is judged by the contract in its own block.
    DevnetError, at once, when the deadline is more than `limit_s` ahead of this machine's clock.
    """
    margin = 0.05 if client.time_unit_ms else 1.0  # a seconds chain stamps floor(now)
    due = client.chain_to_seconds(deadline) + margin
    if due - time.time() > limit_s:
        raise DevnetError(
            f"the commit deadline is {due - time.time():.0f} s away on this machine's clock "
            f"(more than {limit_s:.0f} s): is the clock far behind the chain's?"
        )
    while time.time() < due and client.chain_time() <= deadline:
        time.sleep(min(0.5, max(0.05, due - time.time())))


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
        "admin": devnet.admin,  # the deploying (funded) account: no power over the federation
        "members": list(devnet.members),
        "governance": "members decide by vote (2/3 of the members, at least two); the deployer has no power",
        "sites_rpc_url": devnet.site_rpc_url,
        "chain": devnet.kind,
        "genesis": devnet.genesis,
        "anvil_pid": devnet.anvil_pid,  # the chain's pid (anvil or cypher), under its historical name
        "chain_pid": devnet.anvil_pid,
        "anvil_log" if devnet.kind == "anvil" else "chain_log": str(anvil_log),
        "profile": devnet.profile.name,
        "time_unit_ms": devnet.time_unit_ms,
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
