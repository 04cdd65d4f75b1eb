"""A real anvil for the chain tests: one per session, a snapshot/revert around every test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import DEVNET
from chain.rpc import connect
from chain.types import Deployment, DeployParams, RoundInfo
from chain.wallet import Wallet
from localnet.anvil import AnvilProcess, rpc, set_balance, start_anvil, stop_anvil
from localnet.chain import new_account

# Odd amounts so that "to the wei" checks catch any rounding or double payment.
PARAMS = DeployParams(
    commit_duration_s=100,
    aggregate_duration_s=100,
    verify_duration_s=100,
    max_attempts=3,
    min_committers=1,
    contributor_reward=7 * 10**18 + 3,
    aggregator_reward=5 * 10**18 + 2,
    verifier_reward=10**18 + 1,
)
INITIAL_SHA = hashlib.sha256(b"initial adapter").digest()
INITIAL_CID = "bafkreiinitialadapterinitialadapterinitialadapterinitialad"
CID = "bafkrei" + "u" * 52  # a CIDv1-sized string


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass(frozen=True)
class Base:
    anvil: AnvilProcess
    w3: Web3
    deployment: Deployment
    admin: Wallet
    members: tuple[Wallet, ...]
    outsider: Wallet


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilProcess]:
    proc = start_anvil(Path(tmp_path_factory.mktemp("anvil")) / "anvil.log")
    yield proc
    stop_anvil(proc.pid)


@pytest.fixture(scope="session")
def base(anvil: AnvilProcess) -> Base:
    """A federation with 4 admitted members and one funded outsider."""
    w3 = connect(anvil.rpc_url, DEVNET)
    admin = new_account()
    set_balance(anvil.rpc_url, admin.address, 10**22)
    dep = deploy_federation(
        anvil.rpc_url, admin, PARAMS, INITIAL_SHA, INITIAL_CID, "tiny", sha("lora config"), DEVNET, w3=w3
    )
    client = CoordinatorClient(anvil.rpc_url, dep.coordinator, admin, DEVNET, w3=w3)
    members = tuple(new_account() for _ in range(4))
    for m in members:
        set_balance(anvil.rpc_url, m.address, 10**20)
        client.add_member(m.address)
    outsider = new_account()
    set_balance(anvil.rpc_url, outsider.address, 10**20)
    return Base(anvil, w3, dep, admin, members, outsider)


class Fed:
    """Clients for one test (fresh nonces after each revert) and time helpers."""

    def __init__(self, base: Base) -> None:
        self.base = base
        self.url = base.anvil.rpc_url
        self.admin = self.client(base.admin)
        self.view = self.client(None)
        self.m = [self.client(w) for w in base.members]
        self.outsider = self.client(base.outsider)

    def client(self, wallet: Wallet | None) -> CoordinatorClient:
        return CoordinatorClient(self.url, self.base.deployment.coordinator, wallet, DEVNET, w3=self.base.w3)

    def by_address(self, address: str | None) -> CoordinatorClient:
        return next(c for c in self.m if c.wallet is not None and c.wallet.address == address)

    def addr(self, i: int) -> str:
        return self.base.members[i].address

    def warp_past(self, deadline: int) -> None:
        """Mine a block at `deadline` (the first second at which the deadline counts as passed)."""
        latest = self.view.chain_time()
        rpc(self.url, "evm_mine", [max(deadline, latest + 1)])

    def info(self) -> RoundInfo:
        return self.view.round_info()

    def open_and_commit(self, committers: Sequence[int], tag: str = "") -> int:
        """Open a round and commit one update from each member index in `committers`."""
        self.admin.open_round()
        r = self.view.current_round()
        for i in committers:
            self.m[i].commit_update(r, sha(f"r{r}{tag}-update-{i}"), CID, 100 + i)
        return r

    def balances(self) -> list[int]:
        return [self.view.token_balance(w.address) for w in self.base.members]


@pytest.fixture
def fed(base: Base) -> Iterator[Fed]:
    snapshot = rpc(base.anvil.rpc_url, "evm_snapshot", [])
    try:
        yield Fed(base)
    finally:
        rpc(base.anvil.rpc_url, "evm_revert", [snapshot])
