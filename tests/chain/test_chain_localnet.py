"""`medfed-localnet chain up/down`: a real anvil, deployment.json, funded and admitted wallets."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chain.wallet import load_wallet
from localnet.anvil import is_anvil
from localnet.chain import DevnetError, load_devnet, start_devnet, stop_devnet
from localnet.cli import main


def test_chain_up_and_down_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dev"
    assert main(["chain", "up", "--dir", str(d), "--nodes", "2", "--block-time", "0"]) == 0
    data = json.loads((d / "deployment.json").read_text())
    for key in ("rpc_url", "chain_id", "coordinator", "token", "deploy_block", "wallets", "password_file"):
        assert key in data
    assert data["chain_id"] == 16166 and len(data["wallets"]) == 2
    assert data["rpc_url"].startswith("http://127.0.0.1:")
    pid = data["anvil_pid"]
    try:
        assert is_anvil(pid)
        assert stat.S_IMODE(Path(data["password_file"]).stat().st_mode) == 0o600
        devnet = load_devnet(d)
        client = devnet.client()
        password = devnet.password()
        for path, addr in zip(data["wallets"], data["addresses"], strict=True):
            assert load_wallet(path, password).address == addr
            assert client.is_member(addr) and client.eth_balance(addr) > 10**18
        assert client.deployer() == devnet.admin
        assert sorted(client.members()) == sorted(data["addresses"])  # admitted by the constructor
        # a second `up` on the same dir is refused, naming the fix
        assert main(["chain", "up", "--dir", str(d)]) == 2
        assert "chain down" in capsys.readouterr().err
    finally:
        assert main(["chain", "down", "--dir", str(d)]) == 0
    assert not is_anvil(pid)
    capsys.readouterr()
    # `down` is idempotent: a second one says so and succeeds; a folder with no devnet is an error
    assert main(["chain", "down", "--dir", str(d)]) == 0
    assert capsys.readouterr().out.strip() == "devnet was already stopped"
    assert main(["chain", "down", "--dir", str(tmp_path / "nothing")]) == 2
    assert "no devnet here" in capsys.readouterr().err


def test_down_refuses_a_pid_that_is_not_anvil(tmp_path: Path) -> None:
    devnet = start_devnet(tmp_path / "dev", nodes=1, block_time_s=None)
    real_pid = devnet.anvil_pid
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        data = json.loads(devnet.deployment_file.read_text())
        data["anvil_pid"] = sleeper.pid
        devnet.deployment_file.write_text(json.dumps(data))
        with pytest.raises(DevnetError, match="not an anvil process"):
            stop_devnet(devnet.dir)
        assert sleeper.poll() is None
        data["anvil_pid"] = real_pid
        devnet.deployment_file.write_text(json.dumps(data))
        assert stop_devnet(devnet.dir) is True
        assert not is_anvil(real_pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_fresh_replaces_a_running_devnet(tmp_path: Path) -> None:
    first = start_devnet(tmp_path, nodes=1, block_time_s=None)
    try:
        second = start_devnet(tmp_path, nodes=1, block_time_s=None, fresh=True)
        assert not is_anvil(first.anvil_pid) and is_anvil(second.anvil_pid)
        assert second.coordinator and second.addresses != first.addresses
    finally:
        stop_devnet(tmp_path)


def test_scripted_round_finalizes_and_pays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devnet = start_devnet(tmp_path, nodes=3, block_time_s=None)
    try:
        assert main(["chain", "round", "--dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "RoundFinalized(round=1" in out and out.count("UpdateCommitted") == 3
        client = devnet.client()
        assert client.is_finalized(1)
        p = devnet.params
        balances = sorted(client.token_balance(a) for a in devnet.addresses)
        paid = p.contributor_reward + p.verifier_reward
        assert balances == [paid, paid, p.contributor_reward + p.aggregator_reward]
    finally:
        stop_devnet(tmp_path)
