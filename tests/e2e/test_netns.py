"""Sites behind hospital firewalls (issue 19): three `medfed-node start` processes, each in a network
namespace of its own on a bridge, the last two behind a stateful firewall that drops every inbound
connection; the open site relays for them (circuit relay v2, members only).

One federation serves every assertion: rounds run until two finalized and a firewalled site
aggregated one (the draw is random: P(no firewalled aggregator in n rounds) = 3^-n); every update
is included in every round; rewards are exactly the open network's (3 contributors, the
aggregator, 2 verifiers per round) and equal the token balances; the firewall really refuses
inbound connections; the firewalled sites publish only relayed addresses and fetch each other's
updates through the relay; every site holds the final global adapter; `down` removes namespaces,
links and rules, also after a crash (no records left), and is idempotent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_kit import (
    REWARDS,
    History,
    expected_rewards,
    history,
    log_text,
    netns_why_not,
    paid,
    run,
    sha256_file,
)

from chain import types as ev
from localnet import federation as F
from localnet import netns

pytestmark = pytest.mark.slow


def _dials(ip: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _links(tag: str) -> str:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if tag in line)


def _namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{tag}-")]


def _firewalled(fed: F.Federation) -> set[str]:
    return {fed.devnet.addresses[i].lower() for i in fed.netns.firewalled}


def _goal(fed: F.Federation, h: History) -> bool:
    """Two rounds finalized, and a firewalled site aggregated one of them."""
    final = h.of(ev.RoundFinalized)
    aggregators = {h.submission(f.round, f.attempt).aggregator.lower() for f in final}
    return len(final) >= 2 and bool(aggregators & _firewalled(fed))


@pytest.mark.skipif(netns_why_not() is not None, reason=netns_why_not() or "")
def test_two_firewalled_sites_take_full_part_through_a_member_relay(tmp_path: Path) -> None:
    d = tmp_path / "fed"
    tag = netns.tag_for(d)
    fed, _done = run(d, 3, 8, {}, restart_crashed=False, timeout_s=420, until=_goal, netns=True, firewalled=2)
    try:
        net = fed.netns
        assert net is not None and net.firewalled == (1, 2)
        h = history(fed)
        client = fed.client()
        members = [a.lower() for a in fed.devnet.addresses]
        final = h.of(ev.RoundFinalized)
        assert len(final) >= 2 and not h.of(ev.RoundFailed)

        # every update included in every finalized round, nobody excluded
        for f in final:
            assert {a.lower() for a in h.submission(f.round, f.attempt).included} == set(members)
            assert not h.of(ev.UpdateExcluded, f.round)
        # a firewalled site aggregated (the goal), and its aggregate was accepted
        aggregators = {h.submission(f.round, f.attempt).aggregator.lower() for f in final}
        assert aggregators & _firewalled(fed)

        # rewards as in an open network: 3 contributors + the aggregator + 2 verifiers per round,
        # what the rules say == what was paid == the token balances
        expected = expected_rewards(h)
        assert paid(h) == expected
        for a in members:
            assert client.token_balance(a) == expected.get(a, 0)
        assert sum(expected.values()) == len(final) * (3 * REWARDS[0] + REWARDS[1] + 2 * REWARDS[2])
        settled = {f.round for f in final}
        for a in members:  # each site contributed to (and was paid for) every finalized round
            rounds_paid = {p.round for p in h.of(ev.RewardPaid) if p.to.lower() == a}
            assert rounds_paid == settled

        # the firewall is real: the open site accepts a TCP connection, the firewalled ones do not
        # (the nodes are stopped: start a listener in each namespace on the p2p port)
        listeners = [
            subprocess.Popen(
                [*net.exec_prefix(i), sys.executable, "-c", _LISTEN, net.site_ip(i), str(netns.P2P_PORT)],
                stdout=subprocess.PIPE,
            )
            for i in range(3)
        ]
        try:
            for p in listeners:
                assert p.stdout is not None and p.stdout.readline().strip() == b"listening"
            assert _dials(net.site_ip(0), netns.P2P_PORT)
            assert not _dials(net.site_ip(1), netns.P2P_PORT)
            assert not _dials(net.site_ip(2), netns.P2P_PORT)
        finally:
            for p in listeners:
                p.kill()
                p.wait()

        # the firewalled sites published only addresses through the open site's relay, and they
        # fetched each other's updates through it (no other way between them)
        relay_peer = client.member_peer(members[0]).peer_id
        peers = {i: client.member_peer(members[i]).peer_id for i in range(3)}
        for i in (1, 2):
            rec = client.member_peer(members[i])
            assert rec.multiaddrs and all(
                a.startswith(f"/ip4/{net.site_ip(0)}/tcp/{netns.P2P_PORT}/p2p/{relay_peer}/p2p-circuit/p2p/")
                for a in rec.multiaddrs
            )
            other = peers[3 - i]
            assert f"from {other}" in log_text(fed, i), f"site {i} fetched nothing from site {3 - i}"

        # every site holds the final global adapter
        g = bytes(final[-1].global_sha256).hex()
        for i in range(3):
            held = fed.state_dirs[i] / "adapters" / g / "adapter_model.safetensors"
            assert held.is_file() and sha256_file(held) == g

        assert _namespaces(tag) and _links(tag)
        # a crash leaves no records: `down` still finds and removes everything, and again is a no-op
        (d / "processes.json").unlink(missing_ok=True)
        (d / netns.NETNS_FILE).unlink(missing_ok=True)
    finally:
        F.down(d)
    assert _namespaces(tag) == [] and _links(tag) == ""
    assert F.down(d) == []


_LISTEN = """
import socket, sys, time
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(netns_why_not() is not None, reason=netns_why_not() or "")
def test_hole_punching_joins_a_direct_connection_between_two_firewalled_sites(tmp_path: Path) -> None:
    """DCUtR between two sites behind stateful firewalls (no NAT): they first reach each other
    through the relay, then both dial at once from their listen ports (a TCP simultaneous open,
    which each firewall sees as the reply to its own outgoing SYN) and hold a direct connection;
    the download works."""
    p = netns.plan(tmp_path, 3, 2)
    netns.create(tmp_path, p)
    procs: list[subprocess.Popen[str]] = []
    peer = str(Path(__file__).with_name("netns_peer.py"))

    def start(i: int, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*p.exec_prefix(i), sys.executable, peer, *args], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    def line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    try:
        relay = line(start(0, "relay", p.listen(0))).split()[1]
        first = line(start(1, "private", p.listen(1), relay)).split()[1]
        dialer = start(2, "private", p.listen(2), relay, first)
        assert line(dialer).startswith("READY")
        assert [line(dialer) for _ in range(3)] == ["RELAYED", "DIRECT", f"FETCHED {6 * 200_000}"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        netns.teardown(tmp_path, p.tag)
    assert _namespaces(p.tag) == []


@pytest.mark.parametrize("command", [["up"], ["chain", "up"]])
def test_netns_without_root_says_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    """Without root, `up --netns` and `chain up --netns` refuse at once with one line and exit
    code 2 (nothing started)."""
    cmd = [
        sys.executable,
        "-m",
        "localnet.cli",
        *command,
        "--netns",
        "--nodes",
        "3",
        "--dir",
        str(tmp_path / "x"),
    ]
    if os.geteuid() == 0:  # drop to nobody for this one command
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot run a command without root")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        os.chmod(tmp_path, 0o777)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: --netns needs root (namespaces, veth, a bridge): run it as root or drop --netns"
    ]
    assert not (tmp_path / "x").exists()


_CHAIN_ID = """
import json, sys, urllib.request
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
req = urllib.request.Request(sys.argv[1], body, {"content-type": "application/json"})
print(int(json.load(urllib.request.urlopen(req, timeout=10))["result"], 16))
"""


def _rules(tag: str) -> str:
    """Every root-namespace iptables rule (filter and nat) that mentions ``tag``."""
    out = [
        subprocess.run(["iptables", "-t", t, "-S"], capture_output=True, text=True).stdout
        for t in ("filter", "nat")
    ]
    return "\n".join(line for text in out for line in text.splitlines() if tag in line)


def _localnet(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "localnet.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root)


@pytest.mark.skipif(netns_why_not() is not None, reason=netns_why_not() or "")
@pytest.mark.parametrize("chain", ["anvil", "cypherium"])
def test_chain_up_netns_reaches_the_rpc_from_every_namespace_and_down_removes_it_all(
    tmp_path: Path, chain: str
) -> None:
    """`chain up --netns --firewalled 1` (the CLI, as an operator runs it): each namespace reaches
    the chain RPC at the bridge's address (Cypherium listens on 127.0.0.1 only: forwarded by a
    tagged DNAT rule), each site's medfed.toml names that RPC and its own [p2p] settings, and the
    printed command runs `medfed-node` in the site's namespace against it (`status` reads the
    chain from there, the firewalled site too). `chain down` removes namespaces, links and rules,
    also with the records gone (a crash), and a second `down` says it was already stopped."""
    from localnet.chain import load_devnet
    from node.config import load_config

    d = tmp_path / "dev"
    tag = netns.tag_for(d)
    up = _localnet(
        "chain",
        "up",
        "--netns",
        "--firewalled",
        "1",
        "--nodes",
        "3",
        "--model",
        "tiny",
        "--chain",
        chain,
        "--dir",
        str(d),
    )
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        devnet = load_devnet(d)
        net = netns.load(d)
        assert net is not None and net.sites == 3 and net.firewalled == (2,)
        port = devnet.rpc_url.rsplit(":", 1)[1]
        assert devnet.site_rpc_url == f"http://{net.host_ip}:{port}"
        if chain == "cypherium":  # the node itself listens on loopback only: a DNAT rule of ours
            assert devnet.rpc_url == f"http://127.0.0.1:{port}"
            assert f"--to-destination 127.0.0.1:{port}" in _rules(tag)
        for i in range(3):
            path = d / "sites" / f"node{i}" / "medfed.toml"
            cfg = load_config(path)
            assert cfg.chain.rpc_url == devnet.site_rpc_url
            assert cfg.p2p.listen == (net.listen(i),)
            assert (cfg.p2p.reachability, cfg.p2p.relay) == (
                ("private", False) if i == 2 else ("public", True)
            )
            command = (
                f"ip netns exec {net.ns(i)} medfed-node start --config {path} "
                f"--key {devnet.wallets[i]} --password-file {devnet.password_file}"
            )
            assert f"  {command}" in up.stdout.splitlines()
            # the RPC from inside the namespace, and the node's own CLI on the site's config there
            got = subprocess.run(
                [*net.exec_prefix(i), sys.executable, "-c", _CHAIN_ID, devnet.site_rpc_url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert got.returncode == 0 and int(got.stdout) == devnet.chain_id, got.stderr
            status = subprocess.run(
                [*net.exec_prefix(i), sys.executable, "-m", "node.cli", "status", "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert status.returncode == 0, status.stdout + status.stderr
            assert devnet.coordinator.lower() in status.stdout.lower()
        assert sorted(_namespaces(tag)) == [net.ns(i) for i in range(3)] and _links(tag)
        # a crash leaves no netns record: `down` finds everything by the folder's tag
        (d / netns.NETNS_FILE).unlink()
    finally:
        down = _localnet("chain", "down", "--dir", str(d), timeout=120)
    assert down.returncode == 0 and "devnet stopped" in down.stdout, down.stdout + down.stderr
    assert _namespaces(tag) == [] and _links(tag) == "" and _rules(tag) == ""
    again = _localnet("chain", "down", "--dir", str(d), timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "devnet was already stopped"
