"""`medfed-node status` and the node learn the chain's time unit from its blocks, not from a flag.

Two real anvils: one stamping blocks in seconds (anvil, Ethereum), one in milliseconds like
Cypherium (its clock set to now*1000). Each is read with the WRONG profile in medfed.toml, and
the commit deadline must still show about 30 s away. The real Cypherium node is covered by the
e2e test (tests/e2e/test_cypherium.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import DEVNET
from chain.types import DeployParams
from localnet.anvil import rpc, set_balance, start_anvil, stop_anvil
from localnet.chain import new_account
from node.chainkind import is_millisecond_stamp, resolve_profile
from node.cli import main
from node.config import TEMPLATE

COMMIT_S = 30


def test_stamp_magnitude_against_the_wall_clock() -> None:
    now = 1_795_566_208.0
    assert not is_millisecond_stamp(1_795_566_208, now)  # seconds
    assert not is_millisecond_stamp(1_795_566_208 + 10 * 365 * 86_400, now)  # seconds, 10 years off
    assert is_millisecond_stamp(1_795_566_208_123, now)  # milliseconds
    assert is_millisecond_stamp(1_700_000_000_000, now)  # milliseconds, years in the past
    assert not is_millisecond_stamp(0, now)


def _federation(tmp: Path, millis: bool) -> tuple[str, str]:
    """An anvil in seconds or milliseconds with a deployed coordinator and round 1 open."""
    anvil = start_anvil(tmp / "anvil.log")
    _ANVILS.append(anvil.pid)
    if millis:
        rpc(anvil.rpc_url, "evm_setNextBlockTimestamp", [int(time.time() * 1000)])
        rpc(anvil.rpc_url, "evm_mine", [])
    admin = new_account()
    set_balance(anvil.rpc_url, admin.address, 10**21)
    params = DeployParams(commit_duration_s=COMMIT_S, aggregate_duration_s=30, verify_duration_s=30)
    dep = deploy_federation(
        anvil.rpc_url,
        admin,
        params,
        b"\x01" * 32,
        "cid",
        "tiny",
        b"\x02" * 32,
        DEVNET.replace(time_unit_ms=None),
    )
    assert dep.time_unit_ms is millis
    client = CoordinatorClient(anvil.rpc_url, dep.coordinator, admin, DEVNET.replace(time_unit_ms=millis))
    assert client.is_member(admin.address)  # no members given: the deployer alone
    client.open_round()
    return anvil.rpc_url, dep.coordinator


_ANVILS: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def _stop_anvils() -> Iterator[None]:
    yield
    for pid in _ANVILS:
        stop_anvil(pid)


@pytest.mark.parametrize(("millis", "wrong_profile"), [(True, "devnet"), (False, "cypherium")])
def test_status_shows_deadlines_in_the_chains_own_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], millis: bool, wrong_profile: str
) -> None:
    rpc_url, coordinator = _federation(tmp_path, millis)
    assert resolve_profile(rpc_url, wrong_profile).time_unit_ms is millis
    assert resolve_profile(rpc_url).name == "devnet"  # auto: anvil is not Cypherium
    text = TEMPLATE.replace('rpc_url = "http://127.0.0.1:8545"', f'rpc_url = "{rpc_url}"')
    text = text.replace("0x0000000000000000000000000000000000000000", coordinator)
    text = text.replace('profile = "auto"', f'profile = "{wrong_profile}"')
    cfg = tmp_path / "medfed.toml"
    cfg.write_text(text)
    assert main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"block timestamps in {'ms' if millis else 's'}" in out
    m = re.search(r"commit deadline \S+ \S+ \(in (\d+) s\)", out)
    assert m, out
    assert 0 < int(m.group(1)) <= COMMIT_S
