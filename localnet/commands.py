"""`medfed-localnet up` / `down` / `status` (the argument parsing; the work is in localnet/federation.py)."""

from __future__ import annotations

from typing import Any

from localnet.errors import FederationError
from localnet.federation import run_up
from localnet.nodeconfig import dp_sections
from localnet.options import add_chain_choice, add_netns_choice, chain_genesis
from localnet.processes import down, status_lines


def add_federation_commands(sub: Any) -> None:
    """`up` / `down` / `status` for `medfed-localnet`."""
    up = sub.add_parser("up", help="a whole local federation: devnet, N nodes, R rounds, summary.json")
    add_chain_choice(up)
    up.add_argument("--nodes", type=int, default=3, help="institutions (default 3: one per dataset)")
    up.add_argument("--rounds", type=int, default=2, help="rounds to finalize (default 2)")
    up.add_argument(
        "--model", default="default", help='"default" (SmolLM2-135M) or "tiny" (default: default)'
    )
    up.add_argument("--dir", required=True, help="folder for the chain, nodes, logs and summary.json")
    up.add_argument("--fresh", action="store_true", help="replace a federation already in --dir")
    up.add_argument("--stop", action="store_true", help="also stop the devnet and explorer at the end")
    up.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    up.add_argument(
        "--strategy",
        choices=["fedavg", "exact"],
        default="fedavg",
        help="aggregation strategy (default fedavg)",
    )
    up.add_argument(
        "--data",
        default=None,
        help="sites file: [[site]] tables with name, train, eval ([data] entries) for your own data",
    )
    up.add_argument(
        "--monitoring", action="store_true", help="each node serves /metrics and /healthz on a free port"
    )
    add_netns_choice(up, "each site in a network namespace of its own on a bridge (root; docs/operations.md)")
    up.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help="DP-SGD at the sites, each within this epsilon over --rounds (docs/privacy.md)",
    )
    up.add_argument(
        "--dp-sites", type=int, default=None, help="with --dp-epsilon: the first N nodes (default all)"
    )
    up.set_defaults(func=_up)
    dn = sub.add_parser("down", help="stop everything `up` started in --dir (nodes, explorer, chain)")
    dn.add_argument("--dir", required=True)
    dn.set_defaults(func=_down)
    st = sub.add_parser("status", help="the processes of the federation in --dir and each node's phase")
    st.add_argument("--dir", required=True)
    st.set_defaults(func=_status)


def _up(args: Any) -> int:
    if args.rounds < 1:
        raise FederationError("--rounds must be >= 1")
    return run_up(
        args.dir,
        args.nodes,
        args.rounds,
        args.model,
        args.fresh,
        not args.stop,
        args.timeout,
        args.strategy,
        chain=args.chain,
        genesis=chain_genesis(args),
        data=args.data,
        monitoring=args.monitoring,
        netns=args.netns,
        firewalled=args.firewalled,
        privacy=dp_sections(args.nodes, args.rounds, args.dp_epsilon, args.dp_sites),
    )


def _down(args: Any) -> int:
    stopped = down(args.dir)
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _status(args: Any) -> int:
    for line in status_lines(args.dir):
        print(line)
    return 0
