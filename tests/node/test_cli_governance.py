"""`medfed-node propose | proposals | vote-proposal` against a real anvil devnet (issue 21):
a hospital is voted in, a parameter changed, and every refusal is one line with exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.types import DeployParams
from localnet.chain import Devnet, start_devnet, stop_devnet
from node.cli import main
from node.config import TEMPLATE


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """4 funded wallets, the first 3 admitted at deployment; wallet 3 waits for a vote."""
    d = tmp_path_factory.mktemp("gov-devnet")
    net = start_devnet(d, 4, DeployParams(commit_duration_s=30), block_time_s=None, members=3)
    yield net
    stop_devnet(d)


def _config(tmp_path: Path, devnet: Devnet) -> Path:
    text = TEMPLATE.replace('rpc_url = "http://127.0.0.1:8545"', f'rpc_url = "{devnet.rpc_url}"')
    text = text.replace("0x0000000000000000000000000000000000000000", devnet.coordinator)
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return p


def _run(capsys: pytest.CaptureFixture[str], devnet: Devnet, cfg: Path, i: int | None, *argv: str) -> str:
    """Run the CLI as wallet `i` (None: no key); its stdout, asserting exit 0."""
    key = (
        ["--key", str(devnet.wallets[i]), "--password-file", str(devnet.password_file)]
        if i is not None
        else []
    )
    rc = main([*argv, "--config", str(cfg), *key])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def _refused(capsys: pytest.CaptureFixture[str], devnet: Devnet, cfg: Path, i: int, *argv: str) -> str:
    key = ["--key", str(devnet.wallets[i]), "--password-file", str(devnet.password_file)]
    rc = main([*argv, "--config", str(cfg), *key])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("medfed-node: error: "), err
    return err[0]


def test_a_hospital_is_voted_in_and_a_parameter_changed(
    devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, devnet)
    newcomer = devnet.addresses[3]
    client = devnet.client()
    assert not client.is_member(newcomer)
    assert "no proposals yet" in _run(capsys, devnet, cfg, None, "proposals")
    out = _run(capsys, devnet, cfg, 0, "propose", "add-member", newcomer.lower())
    assert "proposal 1 sent" in out and "tally: 1 yes, 0 no, 2 needed" in out
    assert "already voted on this proposal" in _refused(capsys, devnet, cfg, 0, "vote-proposal", "1", "yes")
    assert "not a member" in _refused(capsys, devnet, cfg, 3, "vote-proposal", "1", "yes")
    assert "not a member" in _refused(capsys, devnet, cfg, 3, "propose", "add-member", newcomer)
    listed = _run(capsys, devnet, cfg, 2, "proposals")
    assert (
        f"#1 add-member {newcomer}: open, 1 yes / 0 no of 2 needed" in listed and "you: not voted" in listed
    )
    out = _run(capsys, devnet, cfg, 1, "vote-proposal", "1", "yes")
    assert "passed and applied (no round was live)" in out and f"applied: add-member {newcomer}" in out
    assert client.is_member(newcomer)
    assert "#1 add-member" in _run(capsys, devnet, cfg, None, "proposals")
    # a parameter, in seconds on the command line (4 members now: 3 needed)
    out = _run(capsys, devnet, cfg, 3, "propose", "set", "commit-duration", "45")
    assert "proposal 2 sent" in out and "3 needed" in out
    _run(capsys, devnet, cfg, 0, "vote-proposal", "2", "yes")
    assert client.params().commit_duration == 30
    out = _run(capsys, devnet, cfg, 1, "vote-proposal", "2", "yes")
    assert "applied: set commit_duration 45" in out and client.params().commit_duration == 45


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("propose", "set", "base-model", "1"), "unknown parameter 'base-model'"),
        (("propose", "set", "max-attempts", "99"), "value out of range for this parameter"),
        (("propose", "set", "open-membership", "maybe"), "give on or off"),
        (("propose", "set", "verifier-reward", "-1"), "give a whole number"),
        (("propose", "set", "verifier-reward"), "takes PARAM VALUE"),
        (("propose", "add-member", "0x1234"), "is not an address"),
        (("propose", "add-member", "0x" + "00" * 20), "zero address"),
        (("propose", "remove-member", "0x" + "ab" * 20), "target is not a member"),
        (("propose", "successor", "0x" + "ab" * 20), "no other coordinator at the successor address"),
        (("vote-proposal", "99", "yes"), "no such proposal"),
    ],
)
def test_every_refusal_is_one_line_and_exit_2(
    devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    cfg = _config(tmp_path, devnet)
    assert needle in _refused(capsys, devnet, cfg, 0, *argv)
