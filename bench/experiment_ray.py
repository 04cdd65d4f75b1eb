"""medfed-experiment on Ray against the local backend: wall time, Ray's overhead per task, same bytes.

Runs ``medfed-experiment --quick --train-sizes 24 --threads 1 --sites N --backend B`` (tiny model,
24 training questions per dataset shared between its institutions) for N in 3 and 12 and B in
local and ray, each as its own process, and reads every run's results.json. The baseline is the
local backend at the same N. Ray's overhead per task is the driver-side round trip of a task
minus the time the task spent inside its actor (startup of the Ray instance and the actors is
reported separately). On a 2-core machine there is nothing to parallelise, so the figure of
interest is the overhead, not the speed-up.

    python bench/experiment_ray.py [--quick] [--sites 3,12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run(backend: str, sites: int, out: Path) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """(wall seconds of the process, results.json, rounds.json) of one run."""
    cmd = [sys.executable, "-m", "training.experiment.cli", "--quick", "--train-sizes", "24"]
    cmd += ["--threads", "1", "--sites", str(sites), "--backend", backend, "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return (
        wall,
        json.loads((out / "results.json").read_text()),
        json.loads((out / "rounds.json").read_text()),
    )


def hashes(rounds: dict[str, Any]) -> list[Any]:
    return [
        (m, r["global_sha256"], sorted((s, v["sha256"]) for s, v in r["local"].items()))
        for m, recs in sorted(rounds.items())
        for r in recs
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 sites only")
    p.add_argument("--sites", default="3,12", help="comma list of site counts (default 3,12)")
    args = p.parse_args()
    counts = [3] if args.quick else [int(x) for x in args.sites.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="medfed-bench-ray-") as tmp:
        for n in counts:
            wall_l, res_l, rounds_l = run("local", n, Path(tmp) / f"local-{n}")
            wall_r, res_r, rounds_r = run("ray", n, Path(tmp) / f"ray-{n}")
            tl, tr = res_l["timing"], res_r["timing"]
            same = hashes(rounds_l) == hashes(rounds_r)
            print(
                f"sites {n}: local {wall_l:.1f} s (run {tl['wall_s']:.1f} s, {tl['local_tasks']:.0f} tasks); "
                f"ray {wall_r:.1f} s (run {tr['wall_s']:.1f} s, {tr['ray_tasks']:.0f} tasks on "
                f"{res_r['backend']['workers']} actors, Ray start {res_r['backend']['ray_init_s']:.1f} s, "
                f"actors + model {res_r['backend']['model_load_s']:.1f} s); "
                f"Ray overhead {tr['ray_overhead_per_task_ms']:.1f} ms per task; "
                f"adapters {'byte-identical' if same else 'DIFFER'}; "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            ratio = wall_r / wall_l
            print(
                f"RESULT experiment_ray_wall_sites{n} {wall_r:.1f} s baseline={wall_l:.1f} ratio={ratio:.2f}"
            )
            # A task's round trip seen by the driver against its time inside the actor (means, ms).
            trip = 1000 * tr["ray_task_roundtrip_s"] / tr["ray_tasks"]
            inside = 1000 * tr["ray_task_s"] / tr["ray_tasks"]
            print(
                f"RESULT experiment_ray_task_roundtrip_sites{n} {trip:.1f} ms "
                f"baseline={inside:.1f} ratio={trip / inside:.3f}"
            )
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
