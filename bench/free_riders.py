"""Free-riders against the work-evidence rules (issue 24), offline on the tiny model: each round,
``--sites`` sites train 4 real steps from the same global on their own synthetic questions (one
learnable pattern: the data agree), the global is their average; each round measures

- every honest update's `agreement` cosine (with the sum of the other honest deltas), and its
  distance from the reference relative to the others' median (what `min_update_ratio` sees);
- free-riders against the honest sum: the reference itself, Gaussian noise of an honest norm, a
  replayed file (a previous round's update, re-bound) and a replayed *change* (a previous round's
  delta re-applied to the new reference).

    python bench/free_riders.py [--sites 3] [--rounds 4]

Prints ``RESULT name value baseline=.. ratio=..``: the baseline of each free-rider is the lowest
honest cosine of the same run (ratio < 1: the free-rider scores below every honest site).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo before bench/training.py

from training.adapter_io import read_adapter, write_canonical_adapter
from training.bounds import agreement
from training.data import Question
from training.lora import LoraSettings, initial_adapter_state
from training.models import build_tiny_model
from training.train import TrainConfig, train_local


def _questions(n: int, offset: int, seed: int) -> list[Question]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = int(rng.integers(4))
        opts = tuple("yes" if j == a else f"no{j}{offset + i}" for j in range(4))
        q = f"Q{offset + i}: which one {rng.integers(100)}?"
        out.append(
            Question(id=f"s/{offset + i}", source="s", language="en", question=q, options=opts, answer=a)
        )
    return out


def _flat(state: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([(state[k].astype(np.float64) - ref[k]).ravel() for k in sorted(ref)])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    model, tok = build_tiny_model(seed=0)
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0)
    work = Path(tempfile.mkdtemp(prefix="medfed-free-riders-"))
    write_canonical_adapter(
        initial_adapter_state(model, settings, seed=0), settings, "medfed/tiny-llama", work / "g0"
    )
    base, rng = work / "g0", np.random.default_rng(7)
    honest: list[float] = []
    ratios: list[float] = []
    riders: dict[str, list[float]] = {
        "reference": [],
        "noise": [],
        "replayed_file": [],
        "replayed_change": [],
    }
    prev: list[tuple[Path, np.ndarray]] = []
    for r in range(1, args.rounds + 1):
        ref = read_adapter(base)
        paths = []
        for s in range(args.sites):
            cfg = TrainConfig(
                lr=2e-4, batch_size=2, grad_accum=1, max_steps=4, max_length=128, seed=10 * r + s
            )
            out = work / f"u{r}-{s}"
            train_local(
                model, tok, base, _questions(16, 1000 * s + 100 * r, 31 * s + r), settings, cfg, out, False
            )
            paths.append(out)
        states = {f"site{s}": read_adapter(p) for s, p in enumerate(paths)}
        honest += list(agreement(states, ref).values())
        deltas = [_flat(st, ref) for st in states.values()]
        norms = [float(np.linalg.norm(d)) for d in deltas]
        ratios += [n / sorted(norms[:i] + norms[i + 1 :])[(len(norms) - 2) // 2] for i, n in enumerate(norms)]
        total = sum(deltas)
        noise = rng.standard_normal(total.size)
        noise *= norms[0] / np.linalg.norm(noise)
        riders["reference"].append(0.0)  # a zero delta: agreement defines its cosine as 0
        riders["noise"].append(_cos(noise, total))
        for path, delta in prev:
            riders["replayed_file"].append(_cos(_flat(read_adapter(path), ref), total))
            riders["replayed_change"].append(_cos(delta, total))
        prev = list(zip(paths, deltas, strict=True))
        mean = {
            k: (sum(st[k].astype(np.float64) for st in states.values()) / len(states)).astype(np.float32)
            for k in ref
        }
        write_canonical_adapter(mean, settings, "medfed/tiny-llama", work / f"g{r}")
        base = work / f"g{r}"
    low = min(honest)
    print(f"honest cosines {min(honest):.3f} to {max(honest):.3f}", end="; ")
    print(f"distance / the others' median {min(ratios):.2f} to {max(ratios):.2f}")
    for name, values in riders.items():
        worst = max(values, key=abs)
        print(f"RESULT free_rider_{name}_cos {worst:.3f} baseline={low:.3f} ratio={worst / low:.2f}")
    print(f"RESULT honest_distance_ratio_min {min(ratios):.2f} baseline=0.10 ratio={min(ratios) / 0.1:.1f}")
    print(f"(d = {total.size} numbers; noise's cosine is about +-{1 / math.sqrt(total.size):.3f})")


if __name__ == "__main__":
    main()
