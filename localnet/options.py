"""Command-line options shared by `medfed-localnet chain up` and `medfed-localnet up`."""

from __future__ import annotations

import argparse

from localnet.chain import CHAINS, DevnetError
from localnet.cypherium import GENESES


def add_chain_choice(p: argparse.ArgumentParser) -> None:
    """`--chain anvil|cypherium` and `--genesis istanbul|official-rules`."""
    p.add_argument(
        "--chain",
        choices=CHAINS,
        default="anvil",
        help="anvil (default) or a real Cypherium node from ../shared/cypherium ($MEDFED_CYPHERIUM_DIR)",
    )
    p.add_argument(
        "--genesis",
        choices=GENESES,
        default=None,
        help="Cypherium EVM rules: istanbul (default) or official-rules (pre-Byzantium: no REVERT/SHL)",
    )


def add_netns_choice(p: argparse.ArgumentParser, netns_help: str) -> None:
    """`--netns` (with what it does for this command) and `--firewalled K` (issue 19)."""
    p.add_argument("--netns", action="store_true", help=netns_help)
    p.add_argument(
        "--firewalled",
        type=int,
        default=0,
        metavar="K",
        help="with --netns: the last K sites accept no inbound connection (relayed by the others)",
    )


def chain_genesis(args: argparse.Namespace) -> str:
    """The --genesis to use; DevnetError when it is given for a chain it does not apply to."""
    if args.genesis is not None and args.chain != "cypherium":
        raise DevnetError(
            f"--genesis {args.genesis} applies to --chain cypherium only (anvil runs Istanbul rules): "
            "add --chain cypherium or drop --genesis"
        )
    return str(args.genesis or "istanbul")
