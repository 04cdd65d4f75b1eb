"""`medfed-node`: wallets, the config template, the site daemon, its status, and the explorer.

Every failure a user can fix prints one line on stderr ("medfed-node: error: <what and how to
fix it>") and exits 2; a traceback appears only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from node.errors import NodeError

PROG = "medfed-node"
EXIT_USER = 2
EXIT_RUNTIME = 1


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story (subsystem errors naming the fix)."""
    types: list[type[BaseException]] = [NodeError]
    for mod, name in (
        ("chain.errors", "ChainError"),
        ("p2p.errors", "P2PError"),
        ("training.errors", "TrainingError"),
        ("node.explorer.errors", "ExplorerError"),
    ):
        try:
            module = __import__(mod, fromlist=[name])
            types.append(getattr(module, name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _password(args: argparse.Namespace, confirm: bool = False) -> str:
    from chain.wallet import resolve_password

    pw: str = resolve_password(getattr(args, "password_file", None), prompt=True, confirm=confirm)
    return pw


def cmd_wallet_new(args: argparse.Namespace) -> int:
    """Create an encrypted keystore and print its address and PeerID."""
    from chain.wallet import create_wallet
    from p2p.identity import peer_id_from_private_key

    w = create_wallet(Path(args.out), _password(args, confirm=True))
    print(f"wrote {args.out} (keystore v3, scrypt, mode 0600)")
    print(f"address {w.address}")
    print(f"peer id {peer_id_from_private_key(w.private_key)}")
    print("Back up this file and its password: without both, this institution's identity is lost.")
    return 0


def cmd_wallet_show(args: argparse.Namespace) -> int:
    """Print the address and the libp2p PeerID derived from the same key."""
    from chain.wallet import load_wallet
    from p2p.identity import peer_id_from_private_key

    w = load_wallet(Path(args.key), _password(args))
    print(f"address {w.address}")
    print(f"peer id {peer_id_from_private_key(w.private_key)}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write the commented medfed.toml template."""
    from node.config import write_template

    out = Path(args.out)
    write_template(out)
    print(
        f"wrote {out}: set [chain] rpc_url and coordinator, your [data] files, then `{PROG} start --key ...`"
    )
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """Run the site daemon until interrupted."""
    from chain.wallet import load_wallet
    from node.config import load_config
    from node.daemon import run_daemon

    cfg = load_config(args.config)
    wallet = load_wallet(Path(args.key), _password(args))
    behaviour = None
    if args.behaviour:
        from node.behaviour import load

        behaviour = load(args.behaviour)
    run_daemon(cfg, wallet, behaviour, args.wait_for_admission)
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    """Relay members' connections (a dedicated relay for sites behind firewalls) until interrupted."""
    import trio

    from chain.wallet import load_wallet
    from node.relay import serve_relay
    from p2p.relay import RelaySettings

    wallet = load_wallet(Path(args.key), _password(args))
    settings = RelaySettings(
        serve=True, max_reservations=args.max_reservations, circuit_mb=args.circuit_mb, hole_punch=False
    )
    store = Path(args.state_dir)
    store.mkdir(parents=True, exist_ok=True)
    trio.run(
        serve_relay,
        args.rpc,
        args.coordinator,
        bytes(wallet.private_key),
        args.listen,
        args.announce,
        settings,
        store,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print membership, current round, phase, role, last global adapter and token balance."""
    from node.config import load_config
    from node.status import node_status

    address = args.address
    if address is not None:
        import re

        from eth_utils import to_checksum_address

        from node.errors import ConfigError

        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise ConfigError(
                f"--address {address[:60]!r} is not an address: give 0x followed by 40 hex digits"
            )
        address = to_checksum_address(address.lower())  # any letter case, checksum or not
    cfg = load_config(args.config)
    if args.key:
        from chain.wallet import load_wallet

        address = load_wallet(Path(args.key), _password(args)).address
    for line in node_status(cfg, address):
        print(line)
    return 0


def _member_client(args: argparse.Namespace) -> Any:
    """A client sending from --key, on the coordinator of --config."""
    from chain.wallet import load_wallet
    from node.config import load_config
    from node.daemon import connect_chain

    cfg = load_config(args.config)
    return connect_chain(cfg, load_wallet(Path(args.key), _password(args)))


def cmd_propose(args: argparse.Namespace) -> int:
    """Propose a membership change, a parameter change or a hand-over (issue 21)."""
    from node.governance import propose

    for line in propose(_member_client(args), args.action, list(args.args)):
        print(line)
    return 0


def cmd_vote_proposal(args: argparse.Namespace) -> int:
    """Vote yes or no on a proposal."""
    from node.governance import vote

    for line in vote(_member_client(args), args.id, args.choice):
        print(line)
    return 0


def cmd_proposals(args: argparse.Namespace) -> int:
    """List the proposals and where each stands."""
    from node.config import load_config
    from node.daemon import connect_chain
    from node.governance import proposal_lines

    cfg = load_config(args.config)
    me = None
    if args.key:
        from chain.wallet import load_wallet

        me = load_wallet(Path(args.key), _password(args)).address
    for line in proposal_lines(connect_chain(cfg, None), me):
        print(line)
    return 0


def _add_member_args(p: argparse.ArgumentParser, key_required: bool = True) -> None:
    p.add_argument("--key", required=key_required, help="keystore file (wallet.json) of a member")
    p.add_argument("--config", default="medfed.toml", help="config file (default medfed.toml)")
    p.add_argument("--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="medfed institution node")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    wallet = sub.add_parser("wallet", help="create or show the institution's key")
    wsub = wallet.add_subparsers(dest="wallet_command", required=True)
    w_new = wsub.add_parser("new", help="create an encrypted keystore (wallet.json)")
    w_new.add_argument("--out", required=True, help="keystore file to create (refuses to overwrite)")
    w_new.add_argument(
        "--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)"
    )
    w_new.set_defaults(func=cmd_wallet_new)
    w_show = wsub.add_parser("show", help="print the address and libp2p PeerID of a keystore")
    w_show.add_argument("--key", required=True, help="keystore file")
    w_show.add_argument(
        "--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)"
    )
    w_show.set_defaults(func=cmd_wallet_show)

    init = sub.add_parser("init", help="write a commented medfed.toml template")
    init.add_argument("--out", default="medfed.toml", help="file to write (default medfed.toml)")
    init.set_defaults(func=cmd_init)

    start = sub.add_parser("start", help="run this institution's node")
    start.add_argument("--key", required=True, help="keystore file (wallet.json)")
    start.add_argument("--config", default="medfed.toml", help="config file (default medfed.toml)")
    start.add_argument(
        "--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)"
    )
    # for test harnesses only (node/behaviour.py): MODULE:FACTORY[=ARGUMENT] replaces the honest node
    start.add_argument("--behaviour", default="", help=argparse.SUPPRESS)
    start.add_argument(
        "--wait-for-admission",
        action="store_true",
        help="a wallet the members have not voted in yet: prepare, then wait for their vote",
    )
    start.set_defaults(func=cmd_start)

    relay = sub.add_parser(
        "relay", help="relay members' connections for sites behind firewalls (a dedicated relay host)"
    )
    relay.add_argument("--rpc", required=True, help="the chain's JSON-RPC URL")
    relay.add_argument("--coordinator", required=True, help="the federation's coordinator address")
    relay.add_argument("--key", required=True, help="the relay's keystore (need not be a member)")
    relay.add_argument("--listen", nargs="+", default=["/ip4/0.0.0.0/tcp/4001"], help="listen multiaddrs")
    relay.add_argument("--announce", nargs="*", default=[], help="public multiaddrs to print for the sites")
    relay.add_argument("--max-reservations", type=int, default=32, help="members reserved at once")
    relay.add_argument("--circuit-mb", type=int, default=4096, help="MB one relayed connection may carry")
    relay.add_argument("--state-dir", default="relay-state", help="folder for the host's scratch files")
    relay.add_argument(
        "--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)"
    )
    relay.set_defaults(func=cmd_relay)

    status = sub.add_parser("status", help="membership, round, phase, role, global adapter, balance")
    status.add_argument("--config", default="medfed.toml", help="config file (default medfed.toml)")
    who = status.add_mutually_exclusive_group()
    who.add_argument("--key", help="keystore file, to show this institution's role and balance")
    who.add_argument("--address", help="an address to show role and balance for (no password needed)")
    status.add_argument(
        "--password-file", help="file holding the password (else $MEDFED_PASSWORD or a prompt)"
    )
    status.set_defaults(func=cmd_status)

    prop = sub.add_parser(
        "propose",
        help="propose: add-member ADDR | remove-member ADDR | set PARAM VALUE | successor ADDR",
        description="A member proposes; the others vote (`vote-proposal`). It passes with 2/3 of the "
        "members (at least two) before the voting period ends, and applies between rounds. PARAM: "
        "commit-duration, aggregate-duration, verify-duration, voting-period (seconds), max-attempts, "
        "min-committers, contributor-reward, aggregator-reward, verifier-reward (smallest token unit), "
        "open-membership (on/off).",
    )
    prop.add_argument("action", choices=("add-member", "remove-member", "set", "successor"))
    prop.add_argument("args", nargs="+", metavar="ARG", help="ADDRESS, or PARAM VALUE for set")
    _add_member_args(prop)
    prop.set_defaults(func=cmd_propose)

    props = sub.add_parser("proposals", help="list the proposals, their tallies and outcomes")
    _add_member_args(props, key_required=False)
    props.set_defaults(func=cmd_proposals)

    vote = sub.add_parser("vote-proposal", help="vote yes or no on a proposal")
    vote.add_argument("id", type=int, help="the proposal number (see `proposals`)")
    vote.add_argument("choice", choices=("yes", "no"))
    _add_member_args(vote)
    vote.set_defaults(func=cmd_vote_proposal)

    try:
        from node.explorer.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def setup_logging(debug: bool) -> None:
    """Timestamped logs on stderr; libraries quiet unless --debug."""
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",  # ms: bench/round.py
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    if not debug:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        for noisy in ("libp2p", "multiaddr", "web3", "urllib3", "async_service", "filelock", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        logging.getLogger("p2p").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `medfed-node` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("MEDFED_DEBUG") == "1"
    setup_logging(debug)
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        rc = func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except _user_error_types() as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:
        if debug:
            raise
        print(
            f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
