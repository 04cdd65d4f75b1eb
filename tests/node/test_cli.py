"""`medfed-node`: wallets, init, and every bad start ends with one clear line and exit code 2.

The chain errors are produced by a real anvil devnet (and a second anvil with another chain id).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.types import DeployParams
from chain.wallet import DEVNET_SCRYPT_N, create_wallet, load_wallet
from localnet.anvil import find_anvil, stop_anvil
from localnet.chain import Devnet, start_devnet, stop_devnet
from node.cli import main
from node.config import TEMPLATE
from p2p.identity import address_from_peer_id
from training.bounds import FederationRules, PrivacyPolicy, federation_config_hash
from training.lora import LoraSettings
from training.models import base_model_id

PASSWORD = "correct horse"
TINY_LORA = LoraSettings(rank=4, alpha=8)
TRAIN_LINE = 'train = [{ source = "medqa-us", split = "dev" }]'


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    d = tmp_path_factory.mktemp("devnet")
    net = start_devnet(
        d,
        1,
        DeployParams(commit_duration_s=30, aggregate_duration_s=30, verify_duration_s=30),
        base_model=base_model_id("tiny"),
        lora_config_hash=bytes.fromhex(federation_config_hash(TINY_LORA, FederationRules())),
        block_time_s=None,
    )
    yield net
    stop_devnet(d)


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    p = tmp_path / "pw.txt"
    p.write_text(PASSWORD + "\n")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, rpc: str, coordinator: str, **edits: str) -> Path:
    text = TEMPLATE.replace('rpc_url = "http://127.0.0.1:8545"', f'rpc_url = "{rpc}"')
    text = text.replace("0x0000000000000000000000000000000000000000", coordinator)
    text = text.replace('base = "default"', 'base = "tiny"').replace("rank = 16", "rank = 4")
    text = text.replace("alpha = 32", "alpha = 8")
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return p


def _start_fails(capsys: pytest.CaptureFixture[str], key: Path, cfg: Path, pw: Path) -> str:
    rc = main(["start", "--key", str(key), "--config", str(cfg), "--password-file", str(pw)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err and err[-1].startswith("medfed-node: error: ")
    assert not any("Traceback" in line for line in err)
    return err[-1]


def _member_wallet(devnet: Devnet, tmp_path: Path) -> Path:
    # re-encrypt node 0's key under our test password
    w = devnet.load_wallet(0)
    from eth_account import Account

    path = tmp_path / "member.json"
    import json

    path.write_text(
        json.dumps(Account.encrypt(w.private_key, PASSWORD, kdf="scrypt", iterations=DEVNET_SCRYPT_N))
    )
    return path


def test_wallet_new_and_show_give_one_identity(
    tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "wallet.json"
    assert main(["wallet", "new", "--out", str(key), "--password-file", str(pwfile)]) == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["wallet", "show", "--key", str(key), "--password-file", str(pwfile)]) == 0
    out = dict(
        line.split(" ", 1)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("address", "peer"))
    )
    address = out["address"]
    peer = out["peer"].removeprefix("id ")
    assert address == load_wallet(key, PASSWORD).address
    assert address_from_peer_id(peer) == address
    # a second `new` refuses to overwrite
    assert main(["wallet", "new", "--out", str(key), "--password-file", str(pwfile)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_wallet_errors_are_one_line(tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "wallet.json"
    create_wallet(key, PASSWORD, scrypt_n=DEVNET_SCRYPT_N)
    bad = tmp_path / "bad.txt"
    bad.write_text("nope\n")
    cases = [
        (["wallet", "show", "--key", str(key), "--password-file", str(bad)], "wrong password"),
        (
            ["wallet", "show", "--key", str(tmp_path / "none.json"), "--password-file", str(pwfile)],
            "no such wallet",
        ),
        (
            ["wallet", "show", "--key", str(key), "--password-file", str(tmp_path / "nopw")],
            "password file not found",
        ),
    ]
    (tmp_path / "corrupt.json").write_text("{not json")
    cases.append(
        (
            ["wallet", "show", "--key", str(tmp_path / "corrupt.json"), "--password-file", str(pwfile)],
            "corrupt",
        )
    )
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("medfed-node: error: ") and words in err[0], err


def test_init_writes_the_template_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "medfed.toml"
    assert main(["init", "--out", str(out)]) == 0
    assert out.read_text() == TEMPLATE
    assert main(["init", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_start_refuses_unreachable_rpc_and_no_contract(
    devnet: Devnet, tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _member_wallet(devnet, tmp_path)
    cfg = _config(tmp_path, f"http://127.0.0.1:{_free_port()}", devnet.coordinator)
    line = _start_fails(capsys, key, cfg, pwfile)
    assert "127.0.0.1" in line
    cfg = _config(tmp_path, devnet.rpc_url, "0x" + "12" * 20)
    line = _start_fails(capsys, key, cfg, pwfile)
    assert "0x1212" in line.lower() or "no contract" in line.lower() or "code" in line.lower()


def test_start_and_status_refuse_another_contract_and_a_non_rpc_url(
    devnet: Devnet, tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: the reward token's address as coordinator, and a web server that is not JSON-RPC."""
    key = _member_wallet(devnet, tmp_path)
    cfg = _config(tmp_path, devnet.rpc_url, devnet.token)
    line = _start_fails(capsys, key, cfg, pwfile)
    assert f"the contract at {devnet.token}" in line and "not a medfed Coordinator" in line
    assert main(["status", "--config", str(cfg), "--address", devnet.addresses[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a medfed Coordinator" in err[0]

    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        cfg = _config(tmp_path, f"http://127.0.0.1:{port}", devnet.coordinator)
        line = _start_fails(capsys, key, cfg, pwfile)
        assert "is it an Ethereum RPC?" in line and "unreachable" not in line
    finally:
        web.kill()
        web.wait()


def test_a_read_only_state_dir_says_so(
    devnet: Devnet, tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: a read-only state dir is not called "not a medfed state store" (which invites
    moving good state away). Root ignores permission bits, so the dir is a read-only bind mount."""
    from node.state import StateStore

    src, ro = tmp_path / "state-src", tmp_path / "state"
    StateStore(src, devnet.coordinator, devnet.addresses[0]).close()
    ro.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only bind mount here (needs root)")
    try:
        key = _member_wallet(devnet, tmp_path)
        cfg = _config(
            tmp_path,
            devnet.rpc_url,
            devnet.coordinator,
            **{'state_dir = "medfed-state"': f'state_dir = "{ro}"'},
        )
        line = _start_fails(capsys, key, cfg, pwfile)
        assert "read-only" in line and "not a medfed state store" not in line
        assert (src / "state.sqlite").stat().st_size > 0  # nothing lost
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)  # lazy: whatever the failure left open


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_start_refuses_wrong_chain_id(
    tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "1", "--accounts", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        key = tmp_path / "w.json"
        create_wallet(key, PASSWORD, scrypt_n=DEVNET_SCRYPT_N)
        cfg = _config(tmp_path, f"http://127.0.0.1:{port}", "0x" + "12" * 20)
        line = _start_fails(capsys, key, cfg, pwfile)
        assert "chain id 1" in line and "16166" in line
    finally:
        stop_anvil(proc.pid)


def test_start_refuses_non_member_wrong_password_wrong_lora_and_bad_data(
    devnet: Devnet, tmp_path: Path, pwfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = tmp_path / "stranger.json"
    create_wallet(stranger, PASSWORD, scrypt_n=DEVNET_SCRYPT_N)
    cfg = _config(tmp_path, devnet.rpc_url, devnet.coordinator)
    line = _start_fails(capsys, stranger, cfg, pwfile)
    assert "is not a member" in line and "propose add-member" in line

    member = _member_wallet(devnet, tmp_path)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the password\n")
    assert "wrong password" in _start_fails(capsys, member, cfg, wrong)

    cfg = _config(tmp_path, devnet.rpc_url, devnet.coordinator, **{"alpha = 8": "alpha = 16"})
    assert "[lora]" in _start_fails(capsys, member, cfg, pwfile)
    # the aggregation strategy and the update bounds are part of the federation's config too:
    # a member with other settings fails at start, in one line, not at the first vote
    # so is a privacy policy (issue 20): a member cannot start under a policy the federation lacks
    for edit in (
        {'strategy = "fedavg"': 'strategy = "exact"'},
        {"max_abs = 100.0": "max_abs = 1000.0"},
        {"require_noise_multiplier = 0.0": "require_noise_multiplier = 0.8"},
    ):
        cfg = _config(tmp_path, devnet.rpc_url, devnet.coordinator, **edit)
        line = _start_fails(capsys, member, cfg, pwfile)
        assert "[aggregation]" in line and "[privacy]" in line and "the federation records" in line

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}\n{broken\n')
    cfg = _config(
        tmp_path,
        devnet.rpc_url,
        devnet.coordinator,
        **{TRAIN_LINE: f'train = [{{ path = "{bad}", format = "medqa" }}]'},
    )
    line = _start_fails(capsys, member, cfg, pwfile)
    assert f"{bad}:2" in line and "[data] train[0]" in line

    cfg = _config(
        tmp_path,
        devnet.rpc_url,
        devnet.coordinator,
        **{TRAIN_LINE: f'train = [{{ path = "{tmp_path / "gone.jsonl"}", format = "medqa" }}]'},
    )
    assert "does not exist" in _start_fails(capsys, member, cfg, pwfile)


def test_real_process_prints_one_line_and_exits_2(tmp_path: Path, pwfile: Path) -> None:
    key = tmp_path / "w.json"
    create_wallet(key, PASSWORD, scrypt_n=DEVNET_SCRYPT_N)
    cfg = _config(tmp_path, f"http://127.0.0.1:{_free_port()}", "0x" + "12" * 20)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "start",
            "--key",
            str(key),
            "--config",
            str(cfg),
            "--password-file",
            str(pwfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medfed-node: error: "), proc.stderr


def test_status_reports_membership_round_and_balance(
    devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, devnet.rpc_url, devnet.coordinator)
    member = devnet.addresses[0]
    assert main(["status", "--config", str(cfg), "--address", member]) == 0
    out = capsys.readouterr().out
    assert f"coordinator {devnet.coordinator}" in out
    assert "1 members" in out and "round: none opened yet" in out
    assert f"member {member}: yes" in out and "token balance: 0.0000 MFR" in out
    stranger = "0x" + "ab" * 20
    assert main(["status", "--config", str(cfg), "--address", stranger]) == 0
    assert "NO (a member proposes `medfed-node propose add-member ADDRESS`" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0xnope", "0x1234", "ab" * 20, "0x" + "g" * 40, "0x" + "ab" * 20 + "\n"])
def test_status_with_a_bad_address_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    cfg = _config(tmp_path, "http://127.0.0.1:9", "0x" + "11" * 20)  # never contacted
    assert main(["status", "--config", str(cfg), "--address", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medfed-node: error: --address") and "40 hex digits" in err[0]


def test_status_accepts_an_address_in_any_letter_case(
    devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, devnet.rpc_url, devnet.coordinator)
    member = devnet.addresses[0]
    assert main(["status", "--config", str(cfg), "--address", member.upper().replace("0X", "0x")]) == 0
    assert f"member {member}: yes" in capsys.readouterr().out


@pytest.fixture(scope="module")
def dp_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A federation whose config hash requires DP-SGD with noise multiplier >= 0.8 (issue 20)."""
    d = tmp_path_factory.mktemp("dp-devnet")
    rules = FederationRules(privacy=PrivacyPolicy(min_noise_multiplier=0.8))
    net = start_devnet(
        d,
        1,
        DeployParams(commit_duration_s=30, aggregate_duration_s=30, verify_duration_s=30),
        base_model=base_model_id("tiny"),
        lora_config_hash=bytes.fromhex(federation_config_hash(TINY_LORA, rules)),
        block_time_s=None,
    )
    yield net
    stop_devnet(d)


def test_real_start_below_the_federations_dp_requirement_exits_2_in_one_line(
    dp_devnet: Devnet, tmp_path: Path, pwfile: Path
) -> None:
    """`python -m node.cli start` of a member whose [privacy] falls short of the policy the
    federation recorded on-chain: without DP-SGD, or with a budget that gives too little noise."""
    member = _member_wallet(dp_devnet, tmp_path)
    policy = {"require_noise_multiplier = 0.0": "require_noise_multiplier = 0.8"}
    loose = {
        'mode = "off"': 'mode = "dp-sgd"',
        "rounds = 0": "rounds = 5",
        "target_epsilon = 8.0": "target_epsilon = 1000.0",
    }
    for edits, fix in (
        (policy, 'set [privacy] mode = "dp-sgd"'),
        ({**policy, **loose}, "lower [privacy] target_epsilon"),
    ):
        cfg = _config(tmp_path, dp_devnet.rpc_url, dp_devnet.coordinator, **edits)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "node.cli",
                "start",
                "--key",
                str(member),
                "--config",
                str(cfg),
                "--password-file",
                str(pwfile),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medfed-node: error: "), proc.stderr[-2000:]
        assert "the federation requires DP-SGD with noise multiplier >= 0.8" in lines[0] and fix in lines[0]
