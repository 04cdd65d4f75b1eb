"""Gas of every coordinator operation and of a full round, for 3, 8 and 16 members (real anvil, Istanbul).

    python bench/gas.py [--quick] [--sizes 3 8 16]

Ends with `RESULT gas_commit <gas> gas baseline=60000 ratio=<r>`: the most expensive commitUpdate
seen in the 3-member federation (first and second round), against the 60k target.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import DEVNET
from chain.rpc import connect
from chain.types import DeployParams
from localnet.anvil import rpc, set_balance, start_anvil, stop_anvil
from localnet.chain import new_account

COMMIT_BASELINE = 60_000
ROUND_TARGET_3 = 600_000
CID = "bafkrei" + "q" * 52


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def measure(rpc_url: str, n: int, rounds: int) -> tuple[dict[str, list[int]], list[int]]:
    """Gas per operation (lists over calls) and the full-round totals for a federation of n."""
    w3 = connect(rpc_url, DEVNET)
    admin = new_account()
    set_balance(rpc_url, admin.address, 10**22)
    params = DeployParams(commit_duration_s=100, aggregate_duration_s=100, verify_duration_s=100)
    dep = deploy_federation(rpc_url, admin, params, sha("init"), CID, "bench", sha("cfg"), DEVNET, w3=w3)
    gas: dict[str, list[int]] = defaultdict(list)
    receipt = w3.eth.get_transaction_receipt(w3.eth.get_block(dep.deploy_block)["transactions"][0])
    gas["deploy"].append(int(receipt["gasUsed"]))
    boss = CoordinatorClient(rpc_url, dep.coordinator, admin, DEVNET, w3=w3)
    wallets = [new_account() for _ in range(n)]
    clients = []
    for w in wallets:
        set_balance(rpc_url, w.address, 10**20)
        gas["addMember"].append(boss.add_member(w.address).gas_used)
        c = boss.with_wallet(w)
        peer = c.publish_peer("16Uiu2HAm" + "x" * 44, ["/ip4/127.0.0.1/tcp/40001"])
        gas["publishPeer"].append(peer.gas_used)
        clients.append(c)
    totals = []
    for _ in range(rounds):
        total = 0
        res = boss.open_round()
        gas["openRound"].append(res.gas_used)
        total += res.gas_used
        r = boss.current_round()
        for i, c in enumerate(clients):
            g = c.commit_update(r, sha(f"{r}-{i}"), CID, 100).gas_used
            gas["commitUpdate"].append(g)
            total += g
        rpc(rpc_url, "evm_mine", [boss.round_info().commit_deadline])
        agg = next(c for c in clients if c.wallet and c.wallet.address == boss.aggregator_of(r))
        g = agg.submit_aggregate(r, sha(f"agg{r}"), CID, [w.address for w in wallets]).gas_used
        gas["submitAggregate (+election)"].append(g)
        total += g
        for c in clients:
            if c is not agg:
                g = c.vote(r, True).gas_used
                gas["vote"].append(g)
                total += g
        g = boss.finalize(r).gas_used
        gas["finalize (+rewards)"].append(g)
        total += g
        totals.append(total)
        gas["reportMetrics"].append(clients[0].report_metrics(r, sha("eval"), 500_000, 100).gas_used)
    # the failure paths: a timed-out aggregator and a rejected aggregate
    boss.open_round()
    r = boss.current_round()
    for i, c in enumerate(clients):
        c.commit_update(r, sha(f"fail{r}-{i}"), CID, 100)
    rpc(rpc_url, "evm_mine", [boss.round_info().commit_deadline])
    gas["advance (close commits + elect)"].append(boss.advance(r).gas_used)
    rpc(rpc_url, "evm_mine", [boss.round_info().aggregate_deadline])
    gas["advance (aggregator timeout)"].append(boss.advance(r).gas_used)
    agg = next(c for c in clients if c.wallet and c.wallet.address == boss.aggregator_of(r))
    agg.submit_aggregate(r, sha("bad"), CID, [wallets[0].address])
    voters = [c for c in clients if c is not agg]
    for c in voters[: max(2, len(voters) // 3 + 1)]:  # at least two rejections decide (issue 12)
        c.vote(r, False)
    gas["finalize (rejection)"].append(boss.finalize(r).gas_used)
    return gas, totals


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 members only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 8, 16])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [3] if args.quick else args.sizes
    worst_commit_3 = 0
    with tempfile.TemporaryDirectory() as tmp:
        anvil = start_anvil(Path(tmp) / "anvil.log")
        try:
            for n in sizes:
                print(f"== {n} members, {args.rounds} rounds (anvil --hardfork istanbul) ==", flush=True)
                gas, totals = measure(anvil.rpc_url, n, args.rounds)
                for op, values in gas.items():
                    print(
                        f"  {op:34s} mean {statistics.mean(values):>9.0f}  min {min(values):>8d}  "
                        f"max {max(values):>8d}  (n={len(values)})"
                    )
                for i, t in enumerate(totals, 1):
                    print(f"  full round {i} (open+commits+submit+votes+finalize): {t} gas")
                if n == 3:
                    worst_commit_3 = max(gas["commitUpdate"])
                    verdict = "under" if max(totals) < ROUND_TARGET_3 else "OVER"
                    worst = max(totals)
                    print(f"  3-member full round: max {worst} gas, {verdict} the {ROUND_TARGET_3} target")
        finally:
            stop_anvil(anvil.pid)
    if not worst_commit_3:
        print("no 3-member run: add 3 to --sizes for the RESULT line", file=sys.stderr)
        return 1
    ratio = worst_commit_3 / COMMIT_BASELINE
    print(f"RESULT gas_commit {worst_commit_3} gas baseline={COMMIT_BASELINE} ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
