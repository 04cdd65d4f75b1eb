"""Per-round coordination overhead of a real local federation, beside the round's training time.

Runs `medfed-localnet`'s federation (separate node processes, real anvil, real libp2p) for one
round with 3 and with 8 nodes and reads what each node measured about itself (its state store):

- training: seconds spent in local training (the useful work);
- coordination: everything else a round costs a node except evaluation: chain transactions
  (commit, submit, vote, housekeeping), transfers (fetching updates), aggregation and
  verification (recomputing the aggregate);
- latency: wall-clock seconds from the commit deadline to the block that finalized the round
  (what coordination adds to a round's duration; includes polling and staggering).

Prints per-node means and ends with
`RESULT round_overhead_<n>n <coordination s> s baseline=<training s> ratio=<coordination/training>`
for the largest federation run. `--quick`: 3 nodes only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain import types as ev
from chain.events import EventReader
from localnet import federation as F
from node.state import StateStore

COORDINATION = ("chain", "transfer", "aggregate", "verify")


def measure(nodes: int, model: str, workdir: Path) -> dict[str, float]:
    """One finalized round with ``nodes`` nodes; per-node mean seconds by kind, and the latency."""
    base = F.DEFAULT_SIZING if model == "default" else F.TINY_SIZING
    sizing = dataclasses.replace(base, commit_s=base.commit_s + 2 * nodes, fetch_patience_s=30.0)
    fed = F.launch(workdir / f"fed{nodes}", nodes, 1, model=model, sizing=sizing, fresh=True, explorer=False)
    try:
        F.wait_ready(fed, 900)
        F.open_first_round(fed)
        done = F.wait_rounds(
            fed, 1, 600 + 3 * (sizing.commit_s + sizing.aggregate_s + sizing.verify_s), progress=False
        )
        if done.get(1) != "finalized":
            raise SystemExit(f"round 1 did not finalize with {nodes} nodes: {done}")
        events = EventReader(fed.client()).read(fed.devnet.deploy_block)
    finally:
        for i in list(fed._procs):
            fed.stop_node(i)
        F.down(fed.dir)
    opened = next(e for e in events if isinstance(e, ev.RoundOpened) and e.round == 1)
    final = next(e for e in events if isinstance(e, ev.RoundFinalized) and e.round == 1)
    totals = {k: 0.0 for k in (*COORDINATION, "train", "evaluate")}
    for i in range(nodes):
        store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, fed.devnet.addresses[i])
        for k, v in store.timings(1).items():
            totals[k] = totals.get(k, 0.0) + v
        store.close()
    out = {k: v / nodes for k, v in totals.items()}
    out["coordination"] = sum(out[k] for k in COORDINATION)
    out["latency"] = _latency(fed, opened, final)
    return out


def _latency(fed: F.Federation, opened: ev.RoundOpened, final: ev.RoundFinalized) -> float:
    """Commit deadline -> finalization, from the finalizing node's log timestamps (anvil is gone)."""
    import re
    from datetime import datetime

    pattern = re.compile(r"^(\S+) INFO\s+medfed.round: chain: round 1 FINALIZED")
    stamps = []
    for i in range(len(fed.sites)):
        for line in fed.log_path(i).read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if m:
                stamps.append(datetime.fromisoformat(m.group(1)).timestamp())
    if not stamps:
        return float("nan")
    return max(0.0, min(stamps) - opened.commit_deadline)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 nodes only")
    p.add_argument("--model", default="tiny", help='"tiny" (default) or "default"')
    p.add_argument("--nodes", default="3,8", help="federation sizes to run (default 3,8)")
    args = p.parse_args(argv)
    sizes = [3] if args.quick else [int(n) for n in args.nodes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="medfed-bench-round-") as tmp:
        for n in sizes:
            t0 = time.monotonic()
            print(f"running one round with {n} nodes ({args.model} model) ...", flush=True)
            results[n] = measure(n, args.model, Path(tmp))
            print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    head = (
        f"{'nodes':>5} {'train s':>9} {'chain s':>9} {'transfer s':>10} {'aggregate s':>11} {'verify s':>9}"
    )
    head += f" {'coord s':>9} {'ratio':>7} {'latency s':>10}"
    print("\nper-node means for one round (coordination = chain + transfer + aggregate + verify)")
    print(head)
    for n, r in results.items():
        ratio = r["coordination"] / r["train"] if r["train"] else float("inf")
        print(
            f"{n:>5} {r['train']:>9.2f} {r['chain']:>9.2f} {r['transfer']:>10.2f} {r['aggregate']:>11.2f}"
            f" {r['verify']:>9.2f} {r['coordination']:>9.2f} {ratio:>7.2f} {r['latency']:>10.1f}"
        )
    n = max(results)
    r = results[n]
    ratio = r["coordination"] / r["train"] if r["train"] else float("inf")
    print(f"RESULT round_overhead_{n}n {r['coordination']:.3f} s baseline={r['train']:.3f} ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
