"""The whole round of a real local federation, against Flower's simulation doing the same work.

    python bench/round.py [--quick] [--rounds 2] [--configs tiny:3,tiny:8,tiny:16,default:3]
                          [--flower-python .venv-bench/bin/python] [--keep DIR]
    python bench/round.py --netns [--rounds 3] [--keep DIR]

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

Where the overhead goes (`--phases`, printed by default): a per-round timeline from the
watcher's stamps of the chain events (every commit, the election, the submission, every vote, the
outcome) and the node logs' stamps of each site's training start and end (same machine clock):

- start: opening -> the slowest site starts training (noticing the round, loading the base);
- train: that site's training;
- commit: its training end -> the last commit seen mined (checks, CID, the commit transaction);
- elect: last commit -> AggregatorElected (the `advance` in the next block);
- aggregate: election -> AggregateSubmitted (noticing, fetching, aggregating, submitting);
- verify: submission -> the last vote (noticing, fetching what prefetch missed, recomputing, voting);
- finalize: last vote -> RoundFinalized.

CPU: the watcher reads every node process's CPU seconds (/proc, all threads) when it sees the
round open and finalize; minus the CPU the node spent training (its `train_cpu` timing), that is
what coordinating the round cost each site (polling, transactions, transfers, checks, recomputing
the aggregate). On a machine with fewer cores than nodes the wall overhead includes waiting for a
core; the per-node CPU is the work each site would do on a machine of its own, which is what
"grows no faster than linearly" is about for a real deployment. Both are printed; the wall figure
is never adjusted.

Prints a table and ends with one `RESULT round_overhead_<n>n` line per node count (tiny model),
one `RESULT round_node_cpu_<n>n` line per node count (coordination CPU seconds per node and round,
baseline = the smallest node count, ratio = growth against it),
`RESULT round_overhead_3n_default` for the default model, and finally
`RESULT round_overhead_3n <medfed s> s baseline=<flower s> ratio=<medfed/flower>` (tiny model,
mean over rounds). `--netns` (root; issue 19): 3 tiny-model sites, each in a network namespace of
its own, with 0, 1 and 2 of them behind a firewall that drops inbound connections (relayed by the
open ones), ending with `RESULT round_overhead_3n_fw<k> <s> s baseline=<0 firewalled> ratio=..`.
`--quick`: the tiny model with 3 nodes only. Without a Python that has flwr
the Flower side is skipped (said at the start and the end; `make bench-deps` builds it) and the
RESULT lines carry baseline=nan.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain import types as ev
from chain.events import EventReader
from localnet import federation as F
from node.state import StateStore

ROOT = Path(__file__).resolve().parents[1]
FULL = "tiny:3,tiny:8,tiny:16,default:3"
QUICK = "tiny:3"
PHASES = ("start", "train", "commit", "elect", "aggregate", "verify", "finalize")
TICK = os.sysconf("SC_CLK_TCK")
_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:[.,](\d{3}))? .*?round (\d+): (training on|trained update)"
)


@dataclass
class RoundTime:
    """One round: wall seconds (open -> finalized) and every site's training seconds."""

    round: int
    wall_s: float
    train_s: list[float]
    phases: dict[str, float] = field(default_factory=dict)  # PHASES -> seconds (medfed only)
    cpu_s: list[float] = field(default_factory=list)  # per node: CPU s open -> finalized, less training
    chain_cpu_s: float = 0.0  # the chain process's CPU s over the round

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
    """Stamps (wall clock) the first sight of each round's events on the chain, and samples the
    CPU seconds of the node and chain processes when a round opens and when it ends."""

    def __init__(self, fed: F.Federation) -> None:
        super().__init__(daemon=True)
        self.fed = fed
        self.opened: dict[int, float] = {}
        self.closed: dict[int, tuple[float, str]] = {}
        self.stamps: dict[tuple[int, str], list[float]] = {}  # (round, kind) -> sight times
        self.cpu: dict[tuple[int, str], dict[str, float]] = {}  # (round, "open"/"end") -> process -> s
        self.stop = threading.Event()

    def _cpu(self) -> dict[str, float]:
        pids = {f"node{i}": pid for i, pid in self.fed.node_pids.items()}
        if self.fed.devnet.anvil_pid:
            pids["chain"] = self.fed.devnet.anvil_pid
        return {name: s for name, pid in pids.items() if (s := cpu_seconds(pid)) is not None}

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
                        r = getattr(e, "round", 0)
                        self.stamps.setdefault((r, type(e).__name__), []).append(now)
                        if isinstance(e, ev.RoundOpened) and r not in self.opened:
                            self.opened[r] = now
                            self.cpu[(r, "open")] = self._cpu()
                        elif isinstance(e, ev.RoundFinalized | ev.RoundFailed) and r not in self.closed:
                            self.closed[r] = (
                                now,
                                "finalized" if isinstance(e, ev.RoundFinalized) else "failed",
                            )
                            self.cpu[(r, "end")] = self._cpu()
                    start = latest + 1
            except Exception as exc:  # the devnet is shutting down, or a hiccup: keep polling
                print(f"  (watcher: {exc})", file=sys.stderr)
            self.stop.wait(0.1)

    def first(self, r: int, kind: str) -> float | None:
        got = self.stamps.get((r, kind))
        return min(got) if got else None

    def last(self, r: int, kind: str) -> float | None:
        got = self.stamps.get((r, kind))
        return max(got) if got else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)


def training_stamps(log_path: Path) -> dict[int, tuple[float, float]]:
    """round -> (training start, training end), unix seconds, from a node log (local time stamps)."""
    start: dict[int, float] = {}
    out: dict[int, tuple[float, float]] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = _LOG_LINE.match(line)
        if not m:
            continue
        t = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S").timestamp()
        t += int(m.group(3) or 0) / 1000  # node logs carry milliseconds (older ones: seconds only)
        r = int(m.group(4))
        if m.group(5) == "training on":
            start[r] = t
        elif r in start:
            out[r] = (start[r], t)
    return out


def phases_of(w: Watcher, r: int, trains: list[tuple[float, float]]) -> dict[str, float]:
    """The round's timeline cut into PHASES (seconds; empty when a stamp is missing)."""
    opened, closed = w.opened.get(r), w.closed.get(r, (None, ""))[0]
    commit, elected = w.last(r, "UpdateCommitted"), w.last(r, "AggregatorElected")
    submitted, vote = w.last(r, "AggregateSubmitted"), w.last(r, "VoteCast")
    if None in (opened, closed, commit, elected, submitted) or not trains:
        return {}
    assert opened and closed and commit and elected and submitted
    t_start, t_end = max(trains, key=lambda se: se[1])  # the site that finished training last
    vote = vote or submitted
    return {
        "start": t_start - opened,
        "train": t_end - t_start,
        "commit": commit - t_end,
        "elect": elected - commit,
        "aggregate": submitted - elected,
        "verify": vote - submitted,
        "finalize": closed - vote,
    }


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


def run_medfed(model: str, nodes: int, rounds: int, workdir: Path, firewalled: int | None = None) -> Run:
    """``rounds`` finalized rounds with ``nodes`` nodes; their wall and training times.
    ``firewalled``: sites in network namespaces, that many behind the firewall (None: loopback)."""
    sizing = sizing_for(model, nodes)
    netns = firewalled is not None
    fed = F.launch(
        workdir / f"{model}{nodes}" / (f"fw{firewalled}" if netns else ""),
        nodes,
        rounds,
        model=model,
        sizing=sizing,
        fresh=True,
        explorer=False,
        netns=netns,
        firewalled=firewalled or 0,
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
    stamps = [training_stamps(fed.log_path(i)) for i in range(nodes)]
    for r in range(1, rounds + 1):
        trains, cpus = [], []
        cpu0, cpu1 = watcher.cpu.get((r, "open"), {}), watcher.cpu.get((r, "end"), {})
        for i, address in enumerate(fed.devnet.addresses):
            store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, address)
            timings = store.timings(r)
            trains.append(timings.get("train", 0.0))
            if f"node{i}" in cpu0 and f"node{i}" in cpu1:
                cpus.append(cpu1[f"node{i}"] - cpu0[f"node{i}"] - timings.get("train_cpu", 0.0))
            rec = store.update(r)
            if rec is not None and not size:
                weights = fed.state_dirs[i] / "adapters" / rec.sha256 / "adapter_model.safetensors"
                size = weights.stat().st_size if weights.is_file() else 0
            store.close()
        spans = [st[r] for st in stamps if r in st]
        out.append(
            RoundTime(
                r,
                watcher.closed[r][0] - watcher.opened[r],
                trains,
                phases_of(watcher, r, spans),
                cpus,
                cpu1.get("chain", 0.0) - cpu0.get("chain", 0.0),
            )
        )
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


FLOWER_HOW = (
    "run `make bench-deps` (creates .venv-bench with the `bench` extra) or pass "
    "--flower-python /path/to/python"
)


def flower_python(arg: str) -> str:
    """The interpreter that runs the Flower side; "" when there is none (the Flower side is skipped),
    a clear error when the one asked for with --flower-python cannot import flwr."""
    candidates = [arg] if arg else [str(ROOT / ".venv-bench" / "bin" / "python"), sys.executable]
    for py in candidates:
        if (
            Path(py).exists()
            and subprocess.run([py, "-c", "import flwr"], capture_output=True).returncode == 0
        ):
            return py
    if arg:
        raise SystemExit(f"bench/round.py: --flower-python {arg} cannot import flwr: {FLOWER_HOW}")
    return ""


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _cells(values: list[float], width: int) -> str:
    return "".join(f" {v:>{width}.2f}" for v in values)


def report(runs: list[Run], flower_skipped: bool) -> None:
    """The tables and the RESULT lines."""
    api = "skipped (no flwr: " + FLOWER_HOW + ")" if flower_skipped else runs[0].flower_api
    print(f"\nper round (s); Flower: {api}; overhead = wall - slowest site's training")
    head = f"{'model':>7} {'nodes':>5} {'round':>5} {'adapter MB':>10} {'slowest train':>13}"
    head += f" {'medfed wall':>11} {'overhead':>8} {'Flower wall':>11} {'overhead':>8} {'ratio':>6}"
    print(head)
    nan = float("nan")
    for run in runs:
        flower = run.flower or [RoundTime(m.round, nan, []) for m in run.rounds]
        for m, f in zip(run.rounds, flower, strict=True):
            f_over = f.wall_s - f.slowest_s
            ratio = m.overhead_s / f_over if f_over > 0 else nan
            cells = (m.slowest_s, m.wall_s, m.overhead_s, f.wall_s, f_over, ratio)
            widths = (13, 11, 8, 11, 8, 6)
            row = f"{run.model:>7} {run.nodes:>5} {m.round:>5} {run.adapter_bytes / 1e6:>10.2f}"
            print(row + "".join(f" {v:>{w}.2f}" for v, w in zip(cells, widths, strict=True)))
    print(
        "\nwhere medfed's round goes (s; see the docstring); CPU: per node, open -> finalized, less training"
    )
    head = f"{'model':>7} {'nodes':>5} {'round':>5}" + "".join(f" {p:>9}" for p in PHASES)
    head += f" {'cpu/node':>9} {'cpu max':>8} {'chain cpu':>9}"
    print(head)
    for run in runs:
        for m in run.rounds:
            row = f"{run.model:>7} {run.nodes:>5} {m.round:>5}"
            row += _cells([m.phases.get(p, nan) for p in PHASES], 9)
            row += f" {mean(m.cpu_s):>9.2f} {max(m.cpu_s, default=nan):>8.2f} {m.chain_cpu_s:>9.2f}"
            print(row)
    print()
    final = None
    for run in runs:
        med = mean([r.overhead_s for r in run.rounds])
        flo = mean([r.wall_s - r.slowest_s for r in run.flower]) if run.flower else nan
        ratio = med / flo if flo > 0 else nan
        name = f"round_overhead_{run.nodes}n" + ("" if run.model == "tiny" else f"_{run.model}")
        line = f"RESULT {name} {med:.3f} s baseline={flo:.3f} ratio={ratio:.3f}"
        if name == "round_overhead_3n":
            final = line
        else:
            print(line)
    tiny = [r for r in runs if r.model == "tiny"]
    if tiny:
        base = min(tiny, key=lambda r: r.nodes)
        base_cpu = mean([mean(r.cpu_s) for r in base.rounds])
        for run in tiny:
            cpu = mean([mean(r.cpu_s) for r in run.rounds])
            ratio = cpu / base_cpu if base_cpu > 0 else nan
            grow = run.nodes / base.nodes
            print(f"coordination CPU per node, {run.nodes} nodes: x{ratio:.2f} for x{grow:.2f} the nodes")
            print(f"RESULT round_node_cpu_{run.nodes}n {cpu:.3f} s baseline={base_cpu:.3f} ratio={ratio:.3f}")
    if flower_skipped:
        print(f"Flower skipped: no Python with flwr; {FLOWER_HOW}")
    if final:
        print(final)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    p.add_argument("--configs", default=FULL, help=f"model:nodes list (default {FULL})")
    p.add_argument("--rounds", type=int, default=2, help="rounds per configuration (default 2)")
    p.add_argument("--flower-python", default="", help="Python with flwr[simulation] (default .venv-bench)")
    p.add_argument("--keep", default="", help="keep each federation's folder (logs, state) under this folder")
    p.add_argument(
        "--netns", action="store_true", help="3 sites in namespaces, 0/1/2 of them firewalled (root)"
    )
    args = p.parse_args(argv)
    if args.netns:
        return main_netns(args.rounds, args.keep)
    configs = [
        (m, int(n)) for m, n in (c.split(":") for c in (QUICK if args.quick else args.configs).split(","))
    ]
    py = flower_python(args.flower_python)
    if not py:
        print(f"Flower skipped: no Python with flwr; {FLOWER_HOW}", flush=True)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="medfed-bench-round-") as tmp:
        where = Path(args.keep).resolve() if args.keep else Path(tmp)
        for model, nodes in configs:
            t0 = time.monotonic()
            print(f"medfed: {args.rounds} rounds, {nodes} nodes, {model} model ...", flush=True)
            run = run_medfed(model, nodes, args.rounds, where)
            print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
            if py:
                print("  Flower, same clients and sleeps ...", flush=True)
                run_flower(run, py)
            runs.append(run)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    report(runs, not py)
    return 0


def main_netns(rounds: int, keep: str) -> int:
    """Round overhead with 0, 1 and 2 of 3 sites behind a firewall (`--netns`)."""
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    runs: dict[int, Run] = {}
    with tempfile.TemporaryDirectory(prefix="medfed-bench-round-") as tmp:
        where = Path(keep).resolve() if keep else Path(tmp)
        for fw in (0, 1, 2):
            t0 = time.monotonic()
            print(f"medfed: {rounds} rounds, 3 sites in namespaces, {fw} firewalled ...", flush=True)
            runs[fw] = run_medfed("tiny", 3, rounds, where, firewalled=fw)
            print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'firewalled':<12}{'wall s':>10}{'slowest train s':>18}{'overhead s':>12}   per round")
    means = {}
    for fw, run in runs.items():
        means[fw] = mean([r.overhead_s for r in run.rounds])
        per = " ".join(f"{r.overhead_s:.2f}" for r in run.rounds)
        wall = mean([r.wall_s for r in run.rounds])
        train = mean([r.slowest_s for r in run.rounds])
        print(f"{fw:<12}{wall:>10.2f}{train:>18.2f}{means[fw]:>12.2f}   {per}")
    print("phases (mean s): " + " ".join(f"{p:>9}" for p in PHASES))
    for fw, run in runs.items():
        cells = " ".join(f"{mean([r.phases.get(p, 0.0) for r in run.rounds]):>9.2f}" for p in PHASES)
        print(f"  {fw} firewalled:  {cells}")
    for fw in (1, 2):
        ratio = means[fw] / means[0] if means[0] > 0 else float("nan")
        print(f"RESULT round_overhead_3n_fw{fw} {means[fw]:.2f} s baseline={means[0]:.2f} ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
