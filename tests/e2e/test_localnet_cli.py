"""`medfed-localnet up` / `status` / `down` as a user runs them: one node, one round, tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_up_writes_summary_and_down_stops_everything(tmp_path: Path) -> None:
    d = tmp_path / "fed"
    up = _cli("up", "--nodes", "1", "--rounds", "1", "--model", "tiny", "--dir", str(d))
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert "Macro" in up.stdout and "medfed-localnet down --dir" in up.stdout
        summary = json.loads((d / "summary.json").read_text())
        assert list(summary["base"]["accuracy"]) == ["medqa-mainland"]
        (r1,) = summary["rounds"]
        assert r1["round"] == 1 and r1["attempts"] == 1 and len(r1["global_sha256"]) == 64
        assert list(r1["rewards"].values()) == [10 * 10**18 + 5 * 10**18]  # contributor + aggregator
        procs = json.loads((d / "processes.json").read_text())
        status = _cli("status", "--dir", str(d), timeout=60)
        assert status.returncode == 0 and "node 0" in status.stdout and "chain anvil" in status.stdout
    finally:
        down = _cli("down", "--dir", str(d), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "anvil" in down.stdout
    for pid in [procs["anvil"], procs.get("explorer"), *procs["nodes"].values()]:
        if pid:
            assert not _alive(int(pid)), f"pid {pid} still running after down"
    again = _cli("down", "--dir", str(d), timeout=60)
    assert again.returncode == 0 and "nothing was running" in again.stdout


def test_chain_up_round_down_on_the_real_cypherium_node(tmp_path: Path) -> None:
    """`chain up/round/down --chain cypherium` (Istanbul rules; the e2e federation covers the official
    ones): `round --no-warp` waits by the wall clock on a quiet chain and finishes the round.
    Where namespaces are available, with `--netns`: the sites' namespaces reach the node through
    the forwarded bridge address, also after the idle restart, and `down` removes it all."""
    from e2e_kit import netns_why_not
    from web3 import Web3

    from localnet import cypherium as cy
    from localnet import netns
    from localnet.chain import load_devnet

    d = tmp_path / "chain"
    namespaced = netns_why_not() is None
    up = _cli(
        "chain",
        "up",
        "--chain",
        "cypherium",
        "--genesis",
        "istanbul",
        "--nodes",
        "2",
        "--commit-s",
        "6",
        "--dir",
        str(d),
        *(["--netns"] if namespaced else []),
    )
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        devnet = load_devnet(d)
        assert devnet.kind == "cypherium" and devnet.genesis == "istanbul" and devnet.time_unit_ms
        assert cy.is_cypher(devnet.chain_pid)
        rnd = _cli("chain", "round", "--no-warp", "--dir", str(d), timeout=240)
        assert rnd.returncode == 0, rnd.stdout[-2000:] + rnd.stderr[-2000:]
        assert "RoundFinalized(round=1" in rnd.stdout and "role=aggregator" in rnd.stdout
        # the idle restart keeps the chain, the port and the RPC URL (threshold lowered for the test)
        w3 = Web3(Web3.HTTPProvider(devnet.rpc_url))
        head = w3.eth.block_number
        node = cy.CypheriumNode(
            devnet.chain_pid, devnet.rpc_url, int(devnet.rpc_url.rsplit(":", 1)[1]), d / "cypherium"
        )
        again = cy.restart_if_idle(node, "istanbul", idle_s=0.0)
        assert again.pid != node.pid and again.rpc_url == node.rpc_url and not cy.is_cypher(node.pid)
        assert w3.eth.block_number == head
        pid = again.pid
        if namespaced:  # the restarted node (same port) is still reached from each namespace
            net = netns.load(d)
            assert net is not None and devnet.site_rpc_url == net.rpc_url(devnet.rpc_url)
            body = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
            post = ["curl", "-s", "-m", "10", "-H", "content-type: application/json", "--data", body]
            for i in range(2):
                got = subprocess.run(
                    [*net.exec_prefix(i), *post, devnet.site_rpc_url],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert int(json.loads(got.stdout)["result"], 16) >= head, got.stdout + got.stderr
    finally:
        down = _cli("chain", "down", "--dir", str(d), timeout=120)
    assert down.returncode == 0 and "devnet stopped" in down.stdout, down.stdout + down.stderr
    assert not _alive(pid)
    if namespaced:
        tag = netns.tag_for(d)
        assert netns.tagged_rules(tag) == []
        assert tag not in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert tag not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_cypherium_missing_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "MEDFED_CYPHERIUM_DIR": str(tmp_path / "nowhere")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "localnet.cli",
            "up",
            "--chain",
            "cypherium",
            "--model",
            "tiny",
            "--dir",
            str(tmp_path / "f"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "no Cypherium node scripts in" in lines[0] and "MEDFED_CYPHERIUM_DIR" in lines[0]
    ), proc.stderr


@pytest.mark.parametrize("command", [["chain", "up"], ["up"]])
def test_genesis_without_cypherium_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    from localnet.cli import main

    assert main([*command, "--dir", str(tmp_path / "d"), "--genesis", "official-rules"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --genesis official-rules applies to --chain cypherium only (anvil runs Istanbul rules): "
        "add --chain cypherium or drop --genesis"
    ]
    assert not (tmp_path / "d").exists()


def test_chain_round_no_warp_on_an_anvil_without_empty_blocks(tmp_path: Path) -> None:
    """Anvil making blocks only for transactions behaves like a quiet Cypherium chain; `chain round
    --no-warp` used to wait for a block timestamp that never came. It follows the wall clock. One
    member is voted in before the round opens and never commits, so the deadline closes the phase."""
    import dataclasses

    from localnet.chain import DEVNET_PARAMS, new_account, scripted_round, start_devnet, stop_devnet

    params = dataclasses.replace(DEVNET_PARAMS, commit_duration_s=3)
    devnet = start_devnet(tmp_path / "chain", 2, params, block_time_s=None)
    try:
        # the two members vote in a third with no wallet here: it never commits (issue 21)
        m0, m1 = (devnet.client(devnet.load_wallet(i)) for i in range(2))
        pid = m0.proposal_count() + 1
        m0.propose_add_member(new_account().address)
        m1.vote_proposal(pid, True)
        assert len(m0.members()) == 3
        t0 = time.monotonic()
        names = [type(e).__name__ for e in scripted_round(devnet, warp=False)]
        assert "AggregatorElected" in names and "RoundFinalized" in names
        assert time.monotonic() - t0 < 60
    finally:
        stop_devnet(tmp_path / "chain")
