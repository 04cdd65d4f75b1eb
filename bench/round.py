"""The whole round of a real local federation, against Flower's simulation doing the same work.

    python bench/round.py [--quick] [--rounds 2] [--configs tiny:3,tiny:8,tiny:16,default:3]
                          [--flower-python .venv-bench/bin/python]

medfed: `medfed-localnet`'s federation (separate node processes, real anvil, real libp2p, real
training) runs each configuration (model:nodes) for a few rounds. A watcher in this process polls
the chain every 0.1 s and stamps when each round's RoundOpened and RoundFinalized appear. Per round:

- wall: opening -> finalization (training, commits, election, transfers, aggregation,
  verification, votes, polling: everything);
- slowest training: the longest local training of the round among the sites (each node's own
  measurement; the useful work a round cannot do without);
- overhead = wall - slowest training: what the federation adds to a round.

Flower: `bench/flower_baseline.py`, run with a Python that has `flwr[simulation]` (the `bench`
extra; `make bench-deps` puts it in .venv-bench, a venv of its own because flwr pins typer below
what transformers installs here), simulates the same number of clients for the same rounds; each
client's fit sleeps exactly the training time medfed's site of the same index measured in that
round and returns a float32 array of the size of medfed's adapter file; FedAvg over them. Its
overhead is measured the same way (round wall - longest sleep).

Prints a table and ends with one `RESULT round_overhead_<n>n` line per node count (tiny model),
`RESULT round_overhead_3n_default` for the default model, and finally
`RESULT round_overhead_3n <medfed s> s baseline=<flower s> ratio=<medfed/flower>` (tiny model,
mean over rounds). `--quick`: the tiny model with 3 nodes only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain import types as ev
from chain.events import EventReader
from localnet import federation as F
from node.state import StateStore

ROOT = Path(__file__).resolve().parents[1]
FULL = "tiny:3,tiny:8,tiny:16,default:3"
QUICK = "tiny:3"


@dataclass
class RoundTime:
    """One round: wall seconds (open -> finalized) and every site's training seconds."""

    round: int
    wall_s: float
    train_s: list[float]

    @property
    def slowest_s(self) -> float:
        return max(self.train_s) if self.train_s else 0.0

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.slowest_s


@dataclass
class Run:
    """One configuration's rounds (medfed) and the adapter size they moved."""

    model: str
    nodes: int
    rounds: list[RoundTime]
    adapter_bytes: int
    flower: list[RoundTime] = field(default_factory=list)
    flower_api: str = ""


class Watcher(threading.Thread):
    """Stamps (wall clock) the first sight of each round's opening and outcome on the chain."""

    def __init__(self, fed: F.Federation) -> None:
        super().__init__(daemon=True)
        self.fed = fed
        self.opened: dict[int, float] = {}
        self.closed: dict[int, tuple[float, str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        client = self.fed.client()
        reader = EventReader(client)
        start = self.fed.devnet.deploy_block
        while not self.stop.is_set():
            try:
                latest = client.block_number()
                if latest >= start:
                    now = time.time()
                    for e in reader.read(start, latest):
                        if isinstance(e, ev.RoundOpened):
                            self.opened.setdefault(e.round, now)
                        elif isinstance(e, ev.RoundFinalized):
                            self.closed.setdefault(e.round, (now, "finalized"))
                        elif isinstance(e, ev.RoundFailed):
                            self.closed.setdefault(e.round, (now, "failed"))
                    start = latest + 1
            except Exception as exc:  # the devnet is shutting down, or a hiccup: keep polling
                print(f"  (watcher: {exc})", file=sys.stderr)
            self.stop.wait(0.1)


def sizing_for(model: str, nodes: int) -> F.Sizing:
    """The launcher's sizing with deadlines that are only a safety net on a loaded machine."""
    base = F.DEFAULT_SIZING if model == "default" else F.TINY_SIZING
    return dataclasses.replace(
        base,
        commit_s=base.commit_s * 3 + 10 * nodes,
        aggregate_s=base.aggregate_s * 2 + 5 * nodes,
        verify_s=base.verify_s * 2 + 5 * nodes,
        fetch_patience_s=60.0,
    )


def run_medfed(model: str, nodes: int, rounds: int, workdir: Path) -> Run:
    """``rounds`` finalized rounds with ``nodes`` nodes; their wall and training times."""
    sizing = sizing_for(model, nodes)
    fed = F.launch(
        workdir / f"{model}{nodes}", nodes, rounds, model=model, sizing=sizing, fresh=True, explorer=False
    )
    watcher = Watcher(fed)
    try:
        F.wait_ready(fed, 1200)
        watcher.start()
        F.open_first_round(fed)
        budget = 600 + rounds * (sizing.commit_s + sizing.aggregate_s + sizing.verify_s)
        done = F.wait_rounds(fed, rounds, budget, progress=False)
        time.sleep(0.3)  # let the watcher stamp the last outcome
        if any(done.get(r) != "finalized" for r in range(1, rounds + 1)):
            raise SystemExit(f"{model} model, {nodes} nodes: not every round finalized: {done}")
    finally:
        watcher.stop.set()
        for i in list(fed._procs):
            fed.stop_node(i)
        F.down(fed.dir)
    out, size = [], 0
    for r in range(1, rounds + 1):
        trains = []
        for i, address in enumerate(fed.devnet.addresses):
            store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, address)
            trains.append(store.timings(r).get("train", 0.0))
            rec = store.update(r)
            if rec is not None and not size:
                weights = fed.state_dirs[i] / "adapters" / rec.sha256 / "adapter_model.safetensors"
                size = weights.stat().st_size if weights.is_file() else 0
            store.close()
        out.append(RoundTime(r, watcher.closed[r][0] - watcher.opened[r], trains))
    return Run(model, nodes, out, size)


def run_flower(run: Run, python: str) -> None:
    """The same rounds in Flower's simulation (clients sleep medfed's training times)."""
    spec = {
        "clients": run.nodes,
        "param_bytes": run.adapter_bytes,
        "sleeps": [r.train_s for r in run.rounds],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    proc = subprocess.run(
        [python, str(ROOT / "bench" / "flower_baseline.py"), fh.name],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    Path(fh.name).unlink(missing_ok=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit("Flower baseline failed:\n  " + "\n  ".join(tail))
    got = json.loads(lines[-1])
    run.flower_api = got["api"]
    run.flower = [
        RoundTime(i + 1, wall, train)
        for i, (wall, train) in enumerate(zip(got["walls"], spec["sleeps"], strict=True))
    ]


def flower_python(arg: str) -> str:
    """The interpreter that runs the Flower side; a clear error naming the fix when there is none."""
    candidates = [arg] if arg else [str(ROOT / ".venv-bench" / "bin" / "python"), sys.executable]
    for py in candidates:
        if (
            Path(py).exists()
            and subprocess.run([py, "-c", "import flwr"], capture_output=True).returncode == 0
        ):
            return py
    raise SystemExit(
        "bench/round.py: no Python with flwr found: run `make bench-deps` (creates .venv-bench with the "
        "`bench` extra) or pass --flower-python /path/to/python"
    )


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    p.add_argument("--configs", default=FULL, help=f"model:nodes list (default {FULL})")
    p.add_argument("--rounds", type=int, default=2, help="rounds per configuration (default 2)")
    p.add_argument("--flower-python", default="", help="Python with flwr[simulation] (default .venv-bench)")
    args = p.parse_args(argv)
    configs = [
        (m, int(n)) for m, n in (c.split(":") for c in (QUICK if args.quick else args.configs).split(","))
    ]
    py = flower_python(args.flower_python)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="medfed-bench-round-") as tmp:
        for model, nodes in configs:
            t0 = time.monotonic()
            print(f"medfed: {args.rounds} rounds, {nodes} nodes, {model} model ...", flush=True)
            run = run_medfed(model, nodes, args.rounds, Path(tmp))
            print(f"  done in {time.monotonic() - t0:.0f} s; Flower, same clients and sleeps ...", flush=True)
            run_flower(run, py)
            runs.append(run)
    print(f"\nper round (s); Flower: {runs[0].flower_api}; overhead = wall - slowest site's training")
    head = (
        f"{'model':>7} {'nodes':>5} {'round':>5} {'adapter MB':>10} {'slowest train':>13} {'medfed wall':>11}"
    )
    head += f" {'overhead':>8} {'Flower wall':>11} {'overhead':>8} {'ratio':>6}"
    print(head)
    for run in runs:
        for m, f in zip(run.rounds, run.flower, strict=True):
            ratio = m.overhead_s / f.overhead_s if f.overhead_s > 0 else float("inf")
            cells = (m.slowest_s, m.wall_s, m.overhead_s, f.wall_s, f.overhead_s, ratio)
            widths = (13, 11, 8, 11, 8, 6)
            row = f"{run.model:>7} {run.nodes:>5} {m.round:>5} {run.adapter_bytes / 1e6:>10.2f}"
            print(row + "".join(f" {v:>{w}.2f}" for v, w in zip(cells, widths, strict=True)))
    print()
    final = None
    for run in runs:
        med = mean([r.overhead_s for r in run.rounds])
        flo = mean([r.overhead_s for r in run.flower])
        ratio = med / flo if flo > 0 else float("inf")
        name = f"round_overhead_{run.nodes}n" + ("" if run.model == "tiny" else f"_{run.model}")
        line = f"RESULT {name} {med:.3f} s baseline={flo:.3f} ratio={ratio:.3f}"
        if name == "round_overhead_3n":
            final = line
        else:
            print(line)
    if final:
        print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
