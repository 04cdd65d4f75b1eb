"""A real Cypherium chain for tests: start it, fund accounts fast, deploy a federation on it.

The node is ../shared/cypherium's `bin/cypher` (localnet.cypherium starts and stops it through
start.sh / stop.sh). It makes a block only while a transaction is pending (~one per 2 s), so the
helpers here send independent transactions together and wait for them once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from eth_account import Account
from web3 import Web3

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import CYPHERIUM
from chain.rpc import connect
from chain.types import Deployment, DeployParams
from chain.wallet import Wallet
from localnet.chain import new_account
from localnet.cypherium import FUNDED_KEY, CypheriumError, CypheriumNode, start_cypherium, stop_cypherium

T = TypeVar("T")


def funded_wallet() -> Wallet:
    """The test chain's pre-funded account (a public test key, see ../shared/cypherium/README.md)."""
    acct = Account.from_key(FUNDED_KEY)
    return Wallet(acct.address, bytes(acct.key))


def running_chain(tmp: Path, genesis: str) -> Iterator[CypheriumNode]:
    """Start a fresh node in `tmp`, yield it, stop it. A node that cannot run FAILS the test."""
    try:
        node = start_cypherium(tmp / f"cypher-{genesis}", genesis)
    except CypheriumError as exc:
        pytest.fail(f"the real Cypherium node is required for this test and did not start: {exc}")
    try:
        yield node
    finally:
        stop_cypherium(node.datadir)


def in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run blocking calls (transactions from different wallets) at once: they share blocks."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def fund(w3: Web3, funder: Wallet, addresses: Sequence[str], wei: int) -> None:
    """Send `wei` to each address with consecutive nonces, then wait for all (one or two blocks)."""
    nonce = w3.eth.get_transaction_count(funder.address, "pending")  # type: ignore[arg-type]
    hashes = []
    for i, to in enumerate(addresses):
        tx = {
            "to": to,
            "value": wei,
            "gas": 21_000,
            "gasPrice": CYPHERIUM.gas_price_wei,
            "chainId": CYPHERIUM.chain_id,
            "nonce": nonce + i,
        }
        signed = Account.sign_transaction(tx, funder.private_key)
        hashes.append(w3.eth.send_raw_transaction(signed.raw_transaction))
    for h in hashes:
        w3.eth.wait_for_transaction_receipt(h, timeout=120, poll_latency=0.5)
    for to in addresses:
        assert w3.eth.get_balance(to) >= wei, f"funding {to} failed"  # type: ignore[arg-type]


def federation(
    rpc_url: str, params: DeployParams, n_members: int, joiners: int = 0
) -> tuple[Deployment, CoordinatorClient, list[CoordinatorClient]]:
    """Deploy a federation whose constructor admits `n_members` fresh funded wallets (issue 21;
    with `joiners`, that many more join it through open membership).

    Returns the deployment, the deployer's client (no power: it only opens rounds and advances,
    which anyone may) and one client per member.
    """
    admin = funded_wallet()
    w3 = connect(rpc_url, CYPHERIUM)
    wallets = [new_account() for _ in range(n_members)]
    dep = deploy_federation(
        rpc_url,
        admin,
        dataclasses.replace(params, open_membership=joiners > 0),
        bytes(32 * [7]),
        "bafkreiinitial",
        "tiny",
        bytes(32 * [9]),
        CYPHERIUM,
        members=[w.address for w in wallets[: n_members - joiners]],
        w3=w3,
    )
    boss = CoordinatorClient(rpc_url, dep.coordinator, admin, CYPHERIUM, w3=w3)
    fund(w3, admin, [w.address for w in wallets], 10**19)
    members = [boss.with_wallet(w) for w in wallets]
    in_parallel([m.join for m in members[n_members - joiners :]])
    return dep, boss, members
