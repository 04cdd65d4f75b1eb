"""`medfed-localnet`: the local devnet launcher.

Subcommands are registered per group so other modules can add theirs:
`medfed-localnet chain up --dir D [--chain anvil|cypherium] [--genesis ...] [--nodes N] [--port P]
[--netns [--firewalled K]] [--model M]`, `medfed-localnet chain round --dir D`,
`medfed-localnet chain down --dir D`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence

from chain.errors import ChainError
from localnet.anvil import AnvilError
from localnet.chain import (
    DEVNET_PARAMS,
    DevnetError,
    load_devnet,
    scripted_round,
)
from localnet.chainsites import chain_down, chain_up
from localnet.commands import add_federation_commands
from localnet.cypherium import CypheriumError
from localnet.options import add_chain_choice, add_netns_choice, chain_genesis

# Exceptions that end a command with one line on stderr and exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    DevnetError,
    AnvilError,
    CypheriumError,
    ChainError,
    ValueError,
)


Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def add_chain_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`chain up` / `chain down`."""
    chain = sub.add_parser("chain", help="the devnet chain alone: a chain + coordinator + funded wallets")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)

    up = chain_sub.add_parser(
        "up", help="start the chain (anvil or Cypherium), deploy, fund and admit N wallets"
    )
    up.add_argument("--dir", required=True, help="devnet folder (deployment.json, wallets, logs)")
    add_chain_choice(up)
    up.add_argument("--nodes", type=int, default=3, help="wallets to create and admit (default 3)")
    up.add_argument(
        "--members",
        type=int,
        default=None,
        help="admit only the first K wallets at deployment; the members vote the others in (issue 21)",
    )
    up.add_argument("--port", type=int, default=0, help="RPC port on 127.0.0.1 (default: a free one)")
    up.add_argument("--commit-s", type=int, default=DEVNET_PARAMS.commit_duration_s)
    up.add_argument("--aggregate-s", type=int, default=DEVNET_PARAMS.aggregate_duration_s)
    up.add_argument("--verify-s", type=int, default=DEVNET_PARAMS.verify_duration_s)
    up.add_argument("--max-attempts", type=int, default=DEVNET_PARAMS.max_attempts)
    up.add_argument("--min-committers", type=int, default=DEVNET_PARAMS.min_committers)
    up.add_argument(
        "--block-time", type=float, default=1.0, help="anvil: seconds between empty blocks (0: none)"
    )
    up.add_argument("--fresh", action="store_true", help="replace a devnet already in --dir")
    add_netns_choice(
        up,
        "each site in a network namespace of its own on a bridge, the chain RPC reachable from "
        "each; writes D/sites/node<i>/medfed.toml and prints each site's start command (root)",
    )
    up.add_argument(
        "--model",
        default=None,
        help='write D/sites/node<i>/medfed.toml for this model: "tiny" (default with --netns) or "default"',
    )
    up.add_argument(
        "--rounds", type=int, default=2, help="the sites' [rounds] last_round (default 2; 0: never stop)"
    )
    up.set_defaults(func=_chain_up)

    rnd = chain_sub.add_parser("round", help="run one scripted round on the contract (stand-in hashes)")
    rnd.add_argument("--dir", required=True)
    rnd.add_argument(
        "--no-warp",
        action="store_true",
        help="wait for the commit deadline instead of warping anvil's clock (Cypherium always waits)",
    )
    rnd.set_defaults(func=_chain_round)

    down = chain_sub.add_parser(
        "down",
        help="stop the devnet's chain (anvil by its recorded pid; Cypherium by stop.sh) and remove "
        "its namespaces, links and iptables rules (--netns)",
    )
    down.add_argument("--dir", required=True)
    down.set_defaults(func=_chain_down)


def _chain_up(args: argparse.Namespace) -> int:
    genesis = chain_genesis(args)
    params = dataclasses.replace(
        DEVNET_PARAMS,
        commit_duration_s=args.commit_s,
        aggregate_duration_s=args.aggregate_s,
        verify_duration_s=args.verify_s,
        max_attempts=args.max_attempts,
        min_committers=args.min_committers,
    )
    if args.chain == "cypherium":
        print(
            f"starting a Cypherium node (genesis {genesis}) and deploying; this takes a minute ...",
            flush=True,
        )
    up = chain_up(
        args.dir,
        args.nodes,
        params,
        port=args.port,
        block_time_s=args.block_time or None,
        fresh=args.fresh,
        chain=args.chain,
        genesis=genesis,
        members=args.members,
        use_netns=args.netns,
        firewalled=args.firewalled,
        model=args.model,
        rounds=args.rounds,
    )
    devnet, net = up.devnet, up.net
    what = (
        f"anvil pid {devnet.anvil_pid}"
        if devnet.kind == "anvil"
        else f"cypher pid {devnet.anvil_pid}, {devnet.genesis} rules"
    )
    print(f"devnet up: {devnet.rpc_url} (chain id {devnet.chain_id}, {what})")
    print(f"coordinator {devnet.coordinator}, token {devnet.token}")
    for path, addr in zip(devnet.wallets, devnet.addresses, strict=True):
        print(f"member {addr}  {path}")
    print(f"wrote {devnet.deployment_file} (wallet password in {devnet.password_file})")
    if net is not None:
        print(
            f"network namespaces {net.ns(0)}..{net.ns(net.sites - 1)} on bridge {net.bridge} "
            f"({net.subnet}.0/24), chain RPC for the sites {devnet.site_rpc_url}; "
            f"behind a firewall: {list(net.firewalled) or 'none'}"
        )
    if up.configs:
        print("start each site (its own terminal or a service manager):")
        for i in range(len(up.configs)):
            print(f"  {up.start_command(i)}")
        what = " and remove the namespaces" if net else ""
        print(f"stop the devnet{what}: medfed-localnet chain down --dir {args.dir}")
    return 0


def _chain_round(args: argparse.Namespace) -> int:
    devnet = load_devnet(args.dir)
    if devnet.kind == "cypherium":
        print(
            f"waiting for the commit deadline ({devnet.params.commit_duration_s} s) on the wall clock ...",
            flush=True,
        )
    for event in scripted_round(devnet, warp=not args.no_warp):
        fields = {k: v for k, v in vars(event).items() if k not in ("block_number", "log_index", "tx_hash")}
        shown = ", ".join(f"{k}={v.hex() if isinstance(v, bytes) else v}" for k, v in fields.items())
        print(f"block {event.block_number:>4}  {event.name}({shown})")
    return 0


def _chain_down(args: argparse.Namespace) -> int:
    chain, removed = chain_down(args.dir)
    if chain == "none" and not removed:
        raise DevnetError(
            f"{args.dir}: no devnet here: start one with `medfed-localnet chain up --dir {args.dir}`"
        )
    print(
        {
            "stopped": "devnet stopped",
            "not running": "devnet was not running (records moved aside)",
            "already stopped": "devnet was already stopped",
            "none": "no devnet recorded",
        }[chain]
        + (f"; removed {', '.join(removed)}" if removed else "")
    )
    return 0


REGISTRARS: list[Registrar] = [add_chain_commands, add_federation_commands]


def build_parser(extra: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    """The parser with every registered command group (REGISTRARS + `extra`)."""
    parser = argparse.ArgumentParser(prog="medfed-localnet", description="medfed local devnet launcher")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (*REGISTRARS, *extra):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
