"""`medfed-node explorer` / `python -m node.explorer`: arguments, errors, and the subprocess form."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from explorer_http import get_json
from explorer_scenario import Scenario

from node.explorer import cli
from node.explorer.server import spawn_explorer

REPO = Path(__file__).resolve().parents[2]


def test_register_adds_the_explorer_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="medfed-node")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["explorer", "--rpc", "http://127.0.0.1:8545", "--coordinator", "0x" + "ab" * 20]
    )
    assert args.command == "explorer" and args.func is cli.run
    assert (args.port, args.host, args.profile, args.db) == (8080, "127.0.0.1", "devnet", None)
    args = parser.parse_args(
        [
            "explorer",
            "--rpc",
            "u",
            "--coordinator",
            "c",
            "--port",
            "0",
            "--db",
            "x.sqlite",
            "--profile",
            "cypherium",
        ]
    )
    assert (args.port, args.db, args.profile) == (0, "x.sqlite", "cypherium")


def run_module(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.explorer", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_no_contract_at_the_address_is_one_line_exit_2(fresh_devnet: Scenario, tmp_path: Path) -> None:
    r = run_module(
        "--rpc", fresh_devnet.rpc_url, "--coordinator", "0x" + "12" * 20, "--db", str(tmp_path / "x.db")
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no contract at" in lines[0] and "Traceback" not in r.stderr


def test_unreachable_rpc_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run_module(
        "--rpc", "http://127.0.0.1:9", "--coordinator", "0x" + "12" * 20, "--db", str(tmp_path / "x.db")
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_subprocess_explorer_serves_and_restarts_on_the_same_index(
    fresh_devnet: Scenario, tmp_path: Path
) -> None:
    db = tmp_path / "explorer.sqlite"
    for _ in range(2):  # the second start reuses the index file
        proc, url = spawn_explorer(
            fresh_devnet.rpc_url, fresh_devnet.coordinator, db, log_path=tmp_path / "ex.log"
        )
        try:
            assert url.startswith("http://127.0.0.1:")
            status, body, _ = get_json(url + "api/rounds/1")
            for _ in range(50):
                if status == 200:
                    break
                time.sleep(0.1)
                status, body, _ = get_json(url + "api/rounds/1")
            assert status == 200 and body["status"] == "finalized"
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0
    assert "EXPLORER_URL http://127.0.0.1:" in (tmp_path / "ex.log").read_text()


def test_bad_coordinator_address_is_refused_before_connecting(capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["--rpc", "http://127.0.0.1:9", "--coordinator", "0x12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an address" in err[0] and "deployment.json" in err[0]


def test_medfed_node_explorer_subcommand_keeps_the_global_debug_flag() -> None:
    from node.cli import build_parser

    args = build_parser().parse_args(["--debug", "explorer", "--rpc", "u", "--coordinator", "0x" + "ab" * 20])
    assert args.func is cli.run and args.debug is True
    args = build_parser().parse_args(["explorer", "--rpc", "u", "--coordinator", "0x" + "ab" * 20])
    assert args.debug is False
