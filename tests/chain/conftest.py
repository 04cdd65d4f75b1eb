"""A real anvil for the chain tests: one per session, a snapshot/revert around every test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from chain_testkit import INITIAL_CID, INITIAL_SHA, PARAMS, Base, Fed, sha
from cypherium_kit import in_parallel, running_chain

from chain.deploy import deploy_federation
from chain.profile import DEVNET
from chain.rpc import connect
from localnet.anvil import AnvilProcess, rpc, set_balance, start_anvil, stop_anvil
from localnet.chain import new_account
from localnet.cypherium import GENESES, CypheriumNode


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
    members = tuple(new_account() for _ in range(4))
    for m in members:
        set_balance(anvil.rpc_url, m.address, 10**20)
    dep = deploy_federation(
        anvil.rpc_url,
        admin,
        PARAMS,
        INITIAL_SHA,
        INITIAL_CID,
        "tiny",
        sha("lora config"),
        DEVNET,
        members=[m.address for m in members],
        w3=w3,
    )
    outsider = new_account()
    set_balance(anvil.rpc_url, outsider.address, 10**20)
    return Base(anvil, w3, dep, admin, members, outsider)


@pytest.fixture
def fed(base: Base) -> Iterator[Fed]:
    snapshot = rpc(base.anvil.rpc_url, "evm_snapshot", [])
    try:
        yield Fed(base)
    finally:
        rpc(base.anvil.rpc_url, "evm_revert", [snapshot])


@pytest.fixture(scope="session")
def cypherium_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CypheriumNode]]:
    """Two real Cypherium nodes (../shared/cypherium), one per rule set, fresh and quiet, started
    together and stopped after the session: {"istanbul": node, "official-rules": node}."""
    tmp = Path(tmp_path_factory.mktemp("cypherium"))
    with contextlib.ExitStack() as stack:
        chains = {g: running_chain(tmp, g) for g in GENESES}
        for gen in chains.values():
            stack.callback(gen.close)  # stops the node (the generator's finally)
        nodes = dict(
            zip(chains, in_parallel([lambda gen=gen: next(gen) for gen in chains.values()]), strict=True)
        )
        yield nodes
