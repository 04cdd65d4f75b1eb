"""Gas of every coordinator operation and of a full round, for 3, 8, 16 and 96 members (96 =
MAX_COMMITTERS, the capacity of a round), and the per-function gas limits (chain/gas.py) fitted
from them. Each run prints its heaviest transaction against a 30M block gas limit; the last
commit (which closes the phase early) and the lazy election in submitAggregate are measured
separately.

    python bench/gas.py [--quick] [--sizes 3 8 16 96] [--cypherium] [--table]

- anvil (--hardfork istanbul) with the committed artifact (evmVersion homestead) and, for
  comparison, the same source compiled for istanbul: what one artifact for both rule sets costs.
- --cypherium: also the REAL Cypherium node (../shared/cypherium) under both geneses (istanbul,
  official-rules = pre-Byzantium gas schedule), with real deadlines (no clock warp; slower).
- --table: fit `base + per_committer * n` per function over every run and compare it with the
  limits in chain/gas.py (every measurement must stay under its limit).

Ends with `RESULT gas_commit <gas> gas baseline=60000 ratio=<r>` (the most expensive commitUpdate
of the 3-member federation, committed artifact on anvil, against the 60k target) and
`RESULT gas_round_homestead_vs_istanbul <gas> gas baseline=<istanbul gas> ratio=<r>` (a full
3-member round, one artifact for both rule sets vs the istanbul-only build).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account

import chain.artifacts as artifacts
from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.gas import GAS_RULES, gas_limit
from chain.profile import CYPHERIUM, DEVNET, ChainProfile
from chain.rpc import connect
from chain.types import DeployParams, ProposalCreated, ProposalPassed, TxResult
from chain.wallet import Wallet
from localnet.anvil import rpc, set_balance, start_anvil, stop_anvil
from localnet.chain import new_account
from localnet.cypherium import FUNDED_KEY, start_cypherium, stop_cypherium

COMMIT_BASELINE = 60_000
ROUND_TARGET_3 = 600_000
BLOCK_GAS_LIMIT = 30_000_000
CID = "bafkrei" + "q" * 52
PEER_ID = "16Uiu2HAm" + "x" * 44
ADDRS = ["/ip4/127.0.0.1/tcp/40001"]
CALLDATA = 200  # bytes of calldata assumed when comparing with the per-byte part of a limit


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Chain:
    """How a measurement run funds accounts and gets past a deadline on one kind of chain."""

    name: str
    rpc_url: str
    profile: ChainProfile
    fund: Callable[[CoordinatorClient | None, str], None]
    reach: Callable[[CoordinatorClient, int], None]  # until a block at/after this chain time can come
    params: DeployParams


def anvil_chain(url: str) -> Chain:
    def fund(_: CoordinatorClient | None, address: str) -> None:
        set_balance(url, address, 10**22)

    def reach(c: CoordinatorClient, deadline: int) -> None:
        rpc(url, "evm_mine", [max(deadline, c.chain_time() + 1)])

    p = DeployParams(commit_duration_s=100, aggregate_duration_s=100, verify_duration_s=100)
    return Chain("anvil", url, DEVNET, fund, reach, p)


def cypherium_chain(url: str, genesis: str, n: int) -> Chain:
    def fund(admin: CoordinatorClient | None, address: str) -> None:
        if admin is not None:
            admin.send_eth(address, 10**19)

    def reach(_: CoordinatorClient, deadline: int) -> None:
        while time.time() * 1000 < deadline + 100:  # wall clock: the next tx makes the block
            time.sleep(0.2)

    p = DeployParams(commit_duration_s=8 + n, aggregate_duration_s=10 + n, verify_duration_s=8 + n)
    return Chain(f"cypherium {genesis}", url, CYPHERIUM, fund, reach, p)


def parallel(calls: list[Callable[[], object]]) -> list[object]:
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def measure(ch: Chain, n: int, rounds: int) -> tuple[dict[str, list[tuple[int, int]]], list[int]]:
    """Gas per operation ((n, gas) samples, keyed 'function' or 'function: case') and round totals."""
    w3 = connect(ch.rpc_url, ch.profile)
    if ch.profile is CYPHERIUM:
        acct = Account.from_key(FUNDED_KEY)
        admin = Wallet(acct.address, bytes(acct.key))
    else:
        admin = new_account()
        ch.fund(None, admin.address)
    wallets = [new_account() for _ in range(n)]
    dep = deploy_federation(
        ch.rpc_url,
        admin,
        ch.params,
        sha("init"),
        CID,
        "bench",
        sha("cfg"),
        ch.profile,
        members=[w.address for w in wallets],  # issue 21: the constructor admits them
        w3=w3,
    )
    gas: dict[str, list[tuple[int, int]]] = defaultdict(list)
    receipt = w3.eth.get_transaction_receipt(w3.eth.get_block(dep.deploy_block)["transactions"][0])
    gas["deploy"].append((n, int(receipt["gasUsed"])))
    boss = CoordinatorClient(ch.rpc_url, dep.coordinator, admin, ch.profile, w3=w3)
    for w in wallets:
        ch.fund(boss, w.address)
    clients = [boss.with_wallet(w) for w in wallets]
    for res in parallel([lambda c=c: c.publish_peer(PEER_ID, ADDRS) for c in clients]):
        gas["publishPeer"].append((n, res.gas_used))  # type: ignore[attr-defined]
    totals = []

    def commit_all(r: int, tag: str, who: list[CoordinatorClient]) -> int:
        """Commit from `who`: all but the last at once, then the last alone. When `who` is every
        member, that last commit closes the phase (moves the deadline): measured separately."""
        results = parallel(
            [
                lambda c=c, i=i: c.commit_update(r, sha(f"{tag}{r}-{i}"), CID, 100)
                for i, c in enumerate(who[:-1])
            ]
        )
        for res in results:
            gas["commitUpdate"].append((n, res.gas_used))  # type: ignore[attr-defined]
        last = who[-1].commit_update(r, sha(f"{tag}{r}-last"), CID, 100).gas_used
        closes = len(who) == len(clients)
        gas["commitUpdate: the last, closes the phase" if closes else "commitUpdate"].append((n, last))
        return sum(res.gas_used for res in results) + last  # type: ignore[attr-defined]

    def aggregator(r: int, attempt: int) -> CoordinatorClient:
        want = boss.rotation_aggregator(r, attempt)
        return next(c for c in clients if c.wallet and c.wallet.address == want)

    for _ in range(rounds):
        res = boss.open_round()
        gas["openRound"].append((n, res.gas_used))
        total = res.gas_used
        r = boss.current_round()
        total += commit_all(r, "", clients)  # every member: the last commit closes the phase
        agg = aggregator(r, 0)  # elected lazily by its own submission, in a later block
        g = agg.submit_aggregate(r, sha(f"agg{r}"), CID, [w.address for w in wallets]).gas_used
        gas["submitAggregate: + the election"].append((n, g))
        total += g
        votes = parallel([lambda c=c, r=r: c.vote(r, True) for c in clients if c is not agg])
        for v in votes:
            gas["vote"].append((n, v.gas_used))  # type: ignore[attr-defined]
            total += v.gas_used  # type: ignore[attr-defined]
        g = boss.finalize(r).gas_used
        gas["finalize: approve + rewards"].append((n, g))
        total += g
        totals.append(total)
        gas["reportMetrics"].append((n, clients[0].report_metrics(r, sha("eval"), 500_000, 100).gas_used))
    # issue 20: a round where every member but the first serves only (no update): serveRound,
    # the last one closing the phase, and the settlement paying servers as verifiers/aggregator
    if n > 1:
        boss.open_round()
        r = boss.current_round()
        clients[0].commit_update(r, sha(f"serve{r}"), CID, 100)
        for res in parallel([lambda c=c: c.serve_round(r) for c in clients[1:-1]]):
            gas["serveRound"].append((n, res.gas_used))  # type: ignore[attr-defined]
        gas["serveRound: the last, closes the phase"].append((n, clients[-1].serve_round(r).gas_used))
        agg = aggregator(r, 0)
        g = agg.submit_aggregate(r, sha(f"agg{r}"), CID, [clients[0].sender_address]).gas_used
        gas["submitAggregate: + the election, one update, the others serving"].append((n, g))
        parallel([lambda c=c, r=r: c.vote(r, True) for c in clients if c is not agg])
        gas["finalize: approve + rewards, the others serving"].append((n, boss.finalize(r).gas_used))
    # the failure paths: an absent member (the deadline closes the phase), a timed-out aggregator,
    # a rejected aggregate (logged, with invalid claims), and a verify-deadline approval (no claims:
    # the invalid mask is cleared) that settles the rejection
    boss.open_round()
    r = boss.current_round()
    committed = clients[:-1] if n > 1 else clients
    commit_all(r, "fail", committed)
    ch.reach(boss, boss.round_info().commit_deadline)
    gas["advance: close commits + elect"].append((n, boss.advance(r).gas_used))
    ch.reach(boss, boss.round_info().aggregate_deadline)
    gas["advance: aggregator timeout"].append((n, boss.advance(r).gas_used))
    agg = aggregator(r, 1)
    # one included, every other committer named invalid (issue 12: the invalid loop and mask)
    invalid = [c.sender_address for c in committed[1:]]
    g = agg.submit_aggregate(r, sha("bad"), CID, [committed[0].sender_address], invalid).gas_used
    gas["submitAggregate: one included, the others invalid"].append((n, g))
    voters = [c for c in committed if c is not agg]
    # two rejections blame the aggregator (one alone only disputes: with 2 committers)
    parallel([lambda c=c: c.vote(r, False) for c in voters[: max(2, len(voters) // 3 + 1)]])
    gas["finalize: failed by vote (logged for settlement)"].append((n, boss.finalize(r).gas_used))
    agg = aggregator(r, 2)
    g = agg.submit_aggregate(r, sha("late"), CID, [c.sender_address for c in committed]).gas_used
    gas["submitAggregate: after a rejection"].append((n, g))
    approvers = [c for c in committed if c is not agg][:1]
    parallel([lambda c=c: c.vote(r, True) for c in approvers])  # not 2/3: the deadline decides
    ch.reach(boss, boss.round_info().verify_deadline)
    g = boss.advance(r).gas_used
    gas["advance: verify deadline, approve + rewards + settle a rejection"].append((n, g))
    governance(ch, boss, clients, gas, n)
    return gas, totals


def governance(
    ch: Chain, boss: CoordinatorClient, clients: list[CoordinatorClient], gas: dict, n: int
) -> None:
    """issue 21: proposals and ballots; the deciding ballot applies the change when no round is
    live, else openRound applies the queued ones. Needs no round live on entry."""

    def decide(res: TxResult, what: str, voters: list[CoordinatorClient]) -> None:
        """Yes ballots until the proposal passes; the deciding one is measured as `what`."""
        ev = res.first(ProposalCreated)
        assert isinstance(ev, ProposalCreated)
        gas["propose"].append((n, res.gas_used))
        for c in voters:
            v = c.vote_proposal(ev.id, True)
            if v.first(ProposalPassed) is not None:
                gas[f"voteProposal: the deciding yes, {what}"].append((n, v.gas_used))
                return
            gas["voteProposal: yes, undecided"].append((n, v.gas_used))
        raise AssertionError(f"proposal {ev.id} did not pass")

    if n < 3:
        return  # a removal needs three members; the other paths are measured at every size
    joiner = new_account()
    ch.fund(boss, joiner.address)
    decide(clients[0].propose_add_member(joiner.address), "applies an admission", clients[1:])
    decide(clients[0].propose_param("open_membership", 1), "applies a parameter", clients[1:])
    late = new_account()
    ch.fund(boss, late.address)
    gas["join"].append((n, boss.with_wallet(late).join().gas_used))
    target = clients[-1]
    others = [*clients[1:-1], boss.with_wallet(joiner), boss.with_wallet(late)]
    decide(clients[0].propose_remove_member(target.sender_address), "applies a removal", others)
    # two changes passed during a round: the next openRound applies them
    boss.open_round()
    decide(clients[0].propose_param("verifier_reward", 3), "queued", others)
    decide(clients[0].propose_param("contributor_reward", 4), "queued", others)
    r = boss.current_round()
    ch.reach(boss, boss.round_info().commit_deadline)
    boss.advance(r)  # nobody committed: the round fails
    gas[f"openRound: applies {QUEUED} queued changes"].append((n, boss.open_round().gas_used))


QUEUED = 2  # changes queued for openRound in `governance` (its gas limit grows with them)


def fit(samples: list[tuple[int, int]]) -> tuple[int, int]:
    """(base, per_committer) such that base + per * n >= every sample."""
    by_n: dict[int, int] = {}
    for n, g in samples:
        by_n[n] = max(by_n.get(n, 0), g)
    ns = sorted(by_n)
    per = max([0] + [(by_n[b] - by_n[a]) // (b - a) + 1 for a, b in itertools.pairwise(ns)])
    base = max(g - per * n for n, g in by_n.items())
    return base, per


def report(label: str, gas: dict[str, list[tuple[int, int]]], totals: list[int]) -> None:
    print(f"== {label} ==", flush=True)
    for op, samples in gas.items():
        values = [g for _, g in samples]
        print(
            f"  {op:62s} mean {statistics.mean(values):>9.0f}  min {min(values):>8d}  "
            f"max {max(values):>8d}  (n={len(values)})"
        )
    for i, t in enumerate(totals, 1):
        print(f"  full round {i} (open+commits+submit+votes+finalize): {t} gas")
    op, worst_tx = max(
        ((k, max(g for _, g in v)) for k, v in gas.items() if k != "deploy"), key=lambda kv: kv[1]
    )
    print(
        f"  heaviest transaction: {op} {worst_tx} gas = {100 * worst_tx / BLOCK_GAS_LIMIT:.1f}% "
        f"of a {BLOCK_GAS_LIMIT:,} block gas limit"
    )


def check_table(all_samples: dict[str, list[tuple[int, int]]]) -> int:
    """Print the fitted table beside chain/gas.py's limits; the number of samples over a limit."""
    print("== per-function gas (fitted over every run) vs chain/gas.py limits ==")
    over = 0
    by_fn: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for op, samples in all_samples.items():
        by_fn[op.split(":")[0]].extend(samples)
    for fn, samples in sorted(by_fn.items()):
        base, per = fit(samples)
        if fn not in GAS_RULES:
            print(f"  {fn:20s} fitted base {base:>8d} + {per:>6d}/committer   (estimated, not in the table)")
            continue
        items = {n: QUEUED for op, ss in all_samples.items() if "queued changes" in op for n, _ in ss}
        worst = [
            (n, g, gas_limit(fn, n, CALLDATA, items.get(n, 0) if fn == "openRound" else 0))
            for n, g in samples
        ]
        bad = [(n, g, lim) for n, g, lim in worst if g > lim]
        over += len(bad)
        headroom = min(lim / g for _, g, lim in worst)
        rule = GAS_RULES[fn]
        print(
            f"  {fn:20s} fitted base {base:>8d} + {per:>6d}/committer   table {rule.base:>8d} + "
            f"{rule.per_committer:>6d}/committer   headroom x{headroom:.2f}"
            + ("   OVER THE LIMIT" if bad else "")
        )
    return over


def run_anvil(sizes: list[int], rounds: int, tmp: Path, evm: str) -> dict[int, tuple[dict, list[int]]]:
    out: dict[int, tuple[dict, list[int]]] = {}
    anvil = start_anvil(tmp / f"anvil-{evm}.log")
    try:
        for n in sizes:
            out[n] = measure(anvil_chain(anvil.rpc_url), n, rounds)
            report(f"anvil --hardfork istanbul, artifact {evm}, {n} members", *out[n])
    finally:
        stop_anvil(anvil.pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 members only, anvil only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 8, 16, 96])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cypherium", action="store_true", help="also measure on the real Cypherium node")
    parser.add_argument("--cypherium-sizes", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--table", action="store_true", help="fit and check the chain/gas.py limits")
    args = parser.parse_args()
    sizes = [3] if args.quick else args.sizes
    every: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def collect(gas: dict[str, list[tuple[int, int]]]) -> None:
        for op, samples in gas.items():
            every[op].extend(samples)

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        committed = run_anvil(sizes, args.rounds, tmp, artifacts.EVM_VERSION)
        for gas, _ in committed.values():
            collect(gas)
        # the same source compiled for istanbul, for the cost of one artifact for both rule sets
        artifacts.compile_contracts(tmp / "istanbul", evm_version="istanbul")
        default_dir = artifacts.BUILD_DIR
        artifacts.BUILD_DIR = tmp / "istanbul"
        artifacts.load_artifact.cache_clear()
        try:
            ist = run_anvil([3], args.rounds, tmp, "istanbul")
        finally:
            artifacts.BUILD_DIR = default_dir
            artifacts.load_artifact.cache_clear()
        if args.cypherium and not args.quick:
            for genesis in ("istanbul", "official-rules"):
                for n in args.cypherium_sizes:
                    node = start_cypherium(tmp / f"cypher-{genesis}-{n}", genesis)
                    try:
                        gas, totals = measure(cypherium_chain(node.rpc_url, genesis, n), n, 1)
                    finally:
                        stop_cypherium(node.datadir)
                    report(
                        f"REAL Cypherium --genesis {genesis}, artifact homestead, {n} members", gas, totals
                    )
                    collect(gas)
    over = check_table(every) if args.table else 0
    if 3 not in committed:
        print("no 3-member run: add 3 to --sizes for the RESULT lines", file=sys.stderr)
        return 1
    gas3, totals3 = committed[3]
    worst_commit = max(g for k, v in gas3.items() if k.startswith("commitUpdate") for _, g in v)
    worst_round, ist_round = max(totals3), max(ist[3][1])
    verdict = "under" if worst_round < ROUND_TARGET_3 else "OVER"
    print(f"3-member full round: max {worst_round} gas, {verdict} the {ROUND_TARGET_3} target")
    ratio = worst_commit / COMMIT_BASELINE
    print(f"RESULT gas_commit {worst_commit} gas baseline={COMMIT_BASELINE} ratio={ratio:.3f}")
    print(
        f"RESULT gas_round_homestead_vs_istanbul {worst_round} gas baseline={ist_round} "
        f"ratio={worst_round / ist_round:.3f}"
    )
    if over:
        print(f"{over} measurements exceed chain/gas.py limits: raise them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
