"""The Ray backend gives the local backend's bytes, even with a worker killed mid-task.

One real ``medfed-experiment --quick --backend ray`` process starts its own local Ray instance
(2 single-CPU actors holding the tiny model) and shuts it down when it ends. While it runs, the
test kills one actor's process in the middle of its first training task (the test hook makes
training tasks wait while a file exists); Ray restarts the actor and retries the task. The run
must then match the local backend's ``--quick`` run byte for byte. (One run for both properties
keeps the suite's time down: starting Ray and its actors costs ~30 s on 2 idle cores.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra (make test installs it)")

from training.experiment.backends.ray_backend import TEST_HOOK_ENV

REPO = Path(__file__).resolve().parents[2]


def _ray_run(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "training.experiment.cli", "--quick", "--backend", "ray", "--out", str(out)]
    cmd += ["--no-progress", "--threads", "1", "--ray-workers", "2", "--ray-cpus-per-worker", "1", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RAY_ADDRESS", None)  # always a private local instance
    log = (out.parent / f"{out.name}.log").open("wb")
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen[bytes], out: Path, timeout: float = 300) -> None:
    rc = proc.wait(timeout=timeout)
    log = (out.parent / f"{out.name}.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]


def _without_seconds(value: Any) -> Any:
    """Drop wall-clock fields (they differ between any two runs); keep everything else."""
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k not in ("seconds", "eval_seconds")}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _hashes(rounds: dict[str, Any]) -> dict[str, list[Any]]:
    return {
        m: [(r["global_sha256"], {s: v["sha256"] for s, v in r["local"].items()}) for r in recs]
        for m, recs in rounds.items()
    }


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    """(output dir, hook dir, killed pid, killed task) of a Ray --quick run with one worker killed."""
    tmp = tmp_path_factory.mktemp("ray")
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "hold").touch()  # training tasks wait (mid-task) while this file exists
    out = tmp / "run"
    proc = _ray_run(out, env={TEST_HOOK_ENV: str(hook)})
    try:
        deadline = time.monotonic() + 300
        started: list[Path] = []
        while not started:
            assert proc.poll() is None, (tmp / "run.log").read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "no training task started"
            started = sorted(hook.glob("train-*"))
            time.sleep(0.1)
        _, pid, task = started[0].name.split("-", 2)
        os.kill(int(pid), signal.SIGKILL)  # the actor process, while it runs a training task
        while _alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (hook / "hold").unlink()
        _finish(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, hook, pid, task


def test_ray_backend_matches_local_byte_for_byte(
    quick_run: Path, ray_run: tuple[Path, Path, str, str]
) -> None:
    out = ray_run[0]
    local_rounds = json.loads((quick_run / "rounds.json").read_text())
    ray_rounds = json.loads((out / "rounds.json").read_text())
    assert set(local_rounds) == {"fedavg", "exact"}
    # sha256 of every round's global adapter and of every site's local update, both methods.
    assert _hashes(ray_rounds) == _hashes(local_rounds)
    assert _without_seconds(ray_rounds) == _without_seconds(local_rounds)  # losses, steps, scores

    local = json.loads((quick_run / "results.json").read_text())
    ray = json.loads((out / "results.json").read_text())
    for key in ("evaluations", "accuracy_table", "fairness_table", "comparisons", "data", "best_single",
                "answer_nll_table", "nll_comparisons", "best_single_nll"):  # fmt: skip
        assert _without_seconds(ray[key]) == _without_seconds(local[key]), key
    assert ray["deviations"] == local["deviations"]
    assert local["backend"]["name"] == "local" and ray["backend"]["name"] == "ray"


def test_killed_worker_is_restarted_and_its_task_retried(ray_run: tuple[Path, Path, str, str]) -> None:
    out, hook, pid, task = ray_run
    assert not _alive(int(pid))
    # The killed task ran again, in another (restarted) worker process.
    again = [p for p in hook.glob(f"train-*-{task}") if p.name.split("-")[1] != pid]
    assert again, sorted(p.name for p in hook.iterdir())
    timing = json.loads((out / "results.json").read_text())["timing"]
    # Both actors served the base evaluation before the kill, then the restarted one took over.
    assert timing["ray_worker_processes"] == 3


def test_ray_backend_runs_tasks_on_actors_that_load_the_model_once(
    ray_run: tuple[Path, Path, str, str],
) -> None:
    data = json.loads((ray_run[0] / "results.json").read_text())
    timing, backend = data["timing"], data["backend"]
    assert backend["workers"] == 2 and len(backend["ray"]["workers"]) == 2
    assert backend["ray"]["cluster_gpus"] == 0
    # --quick: 8 evaluations (base, 2 fedavg, 3 single, 2 exact) x 3 test sets + 4 rounds x 3 sites
    assert timing["ray_tasks"] == 8 * 3 + 4 * 3
    assert timing["ray_model_loads"] == 2  # the two live actors loaded the model once each, not per task
    assert timing["ray_overhead_per_task_ms"] >= 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
