"""`medfed-node explorer` / `python -m node.explorer`: arguments, errors, and the subprocess form."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from explorer_http import get_json
from explorer_scenario import Scenario

from node.explorer import cli
from node.explorer.db import Database
from node.explorer.indexer import Indexer
from node.explorer.server import spawn_explorer


def test_register_adds_the_explorer_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="medfed-node")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["explorer", "--rpc", "http://127.0.0.1:8545", "--coordinator", "0x" + "ab" * 20]
    )
    assert args.command == "explorer" and args.func is cli.run
    assert (args.port, args.host, args.profile, args.db) == (8080, "127.0.0.1", "auto", None)
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


def test_no_contract_at_the_address_is_one_line_exit_2(
    fresh_devnet: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coordinator = "0x" + "12" * 20
    assert (
        cli.main(["--rpc", fresh_devnet.rpc_url, "--coordinator", coordinator, "--db", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no contract at" in err[0] and "Traceback" not in err[0]


def test_another_contract_at_the_address_is_one_line_exit_2(
    fresh_devnet: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: the reward token's address instead of the coordinator's (the explorer used to
    retry it forever)."""
    token = fresh_devnet.token
    assert cli.main(["--rpc", fresh_devnet.rpc_url, "--coordinator", token, "--db", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a medfed Coordinator" in err[0] and token in err[0]


def test_unreachable_rpc_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coordinator = "0x" + "12" * 20
    assert (
        cli.main(["--rpc", "http://127.0.0.1:9", "--coordinator", coordinator, "--db", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0]


def test_subprocess_explorer_serves_an_index_built_by_another_process(
    fresh_devnet: Scenario, tmp_path: Path
) -> None:
    db_path = tmp_path / "explorer.sqlite"
    db = Database(db_path)
    Indexer.connect(fresh_devnet.rpc_url, fresh_devnet.coordinator, db).sync_once()
    last = db.last_block()
    db.close()
    proc, url = spawn_explorer(
        fresh_devnet.rpc_url, fresh_devnet.coordinator, db_path, log_path=tmp_path / "ex.log"
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        status, body, _ = get_json(url + "api/rounds/1")
        assert status == 200 and body["status"] == "finalized"  # served from the index at once
        assert get_json(url + "api/status")[1]["last_block"] == last
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    assert "EXPLORER_URL http://127.0.0.1:" in (tmp_path / "ex.log").read_text()


def test_bad_coordinator_address_is_refused_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--rpc", "http://127.0.0.1:9", "--coordinator", "0x12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an address" in err[0] and "deployment.json" in err[0]


def test_medfed_node_explorer_subcommand_keeps_the_global_debug_flag() -> None:
    from node.cli import build_parser

    args = build_parser().parse_args(["--debug", "explorer", "--rpc", "u", "--coordinator", "0x" + "ab" * 20])
    assert args.func is cli.run and args.debug is True
    args = build_parser().parse_args(["explorer", "--rpc", "u", "--coordinator", "0x" + "ab" * 20])
    assert args.debug is False


def test_busy_port_and_unwritable_index_are_one_line_errors(
    fresh_devnet: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["--rpc", fresh_devnet.rpc_url, "--coordinator", fresh_devnet.coordinator, "--port", str(port)]
        assert cli.main([*argv, "--db", str(tmp_path / "x.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0] and "--port" in err[0]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main([*argv, "--db", str(blocker / "x.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open the explorer index" in err[0]
