"""Shared helpers of the chain tests (a uniquely named module: every test dir has a conftest)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from web3 import Web3

from chain.client import CoordinatorClient
from chain.profile import DEVNET
from chain.types import Deployment, DeployParams, Phase, ProposalCreated, RoundInfo, TxResult
from chain.wallet import Wallet
from localnet.anvil import AnvilProcess, rpc

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

    def close_commits(self) -> None:
        """End the commit phase: warp past its deadline unless every member's commit closed it."""
        info = self.info()
        if info.phase == Phase.COMMIT:
            self.warp_past(info.commit_deadline)

    def info(self) -> RoundInfo:
        return self.view.round_info()

    def open_and_commit(self, committers: Sequence[int], tag: str = "") -> int:
        """Open a round and commit one update from each member index in `committers`."""
        self.admin.open_round()
        r = self.view.current_round()
        for i in committers:
            self.m[i].commit_update(r, sha(f"r{r}{tag}-update-{i}"), CID, 100 + i)
        return r

    def pass_proposal(self, created: TxResult, voters: Sequence[int]) -> int:
        """Yes votes from member indexes `voters` on the proposal `created` opened; its id."""
        ev = created.first(ProposalCreated)
        assert isinstance(ev, ProposalCreated)
        for i in voters:
            self.m[i].vote_proposal(ev.id, True)
        return int(ev.id)

    def balances(self) -> list[int]:
        return [self.view.token_balance(w.address) for w in self.base.members]
