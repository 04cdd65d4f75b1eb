"""Accuracy, Macro-Acc, Min-Acc and H-mean with bootstrap 95% intervals, from per-question correctness.

The bootstrap resamples questions with replacement *within* each test set (the sets are fixed
institutions, only their questions are samples). All methods are scored on the same questions,
so a difference between two methods is bootstrapped paired: the same resample for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

AGGREGATES = ("macro", "min", "hmean")


@dataclass(frozen=True)
class Estimate:
    """A point estimate (percent) and its bootstrap 95% interval."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, Any]:
        return {"value": round(self.value, 4), "ci95": [round(self.lo, 4), round(self.hi, 4)]}


@dataclass(frozen=True)
class Scores:
    """One method's scores: accuracy per site, the three aggregates, and test-set sizes."""

    accuracy: dict[str, Estimate]
    macro: Estimate
    min: Estimate
    hmean: Estimate
    n: dict[str, int]

    def aggregate(self, name: str) -> Estimate:
        return {"macro": self.macro, "min": self.min, "hmean": self.hmean}[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": {k: v.to_dict() for k, v in self.accuracy.items()},
            "macro": self.macro.to_dict(),
            "min": self.min.to_dict(),
            "hmean": self.hmean.to_dict(),
            "n": dict(self.n),
        }


def hmean(acc: np.ndarray, axis: int = -1) -> np.ndarray:
    """Harmonic mean along ``axis``; 0 where any accuracy is 0."""
    acc = np.asarray(acc, dtype=np.float64)
    zero = (acc <= 0).any(axis=axis)
    safe = np.where(acc <= 0, 1.0, acc)
    out = acc.shape[axis] / (1.0 / safe).sum(axis=axis)
    return np.where(zero, 0.0, out)


def _aggregates(acc: np.ndarray) -> dict[str, np.ndarray]:
    """acc: (..., sites) in percent -> {macro, min, hmean} over the last axis."""
    return {"macro": acc.mean(axis=-1), "min": acc.min(axis=-1), "hmean": hmean(acc, axis=-1)}


def _resample_indices(n: Mapping[str, int], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, size, size=(n_boot, size)) for k, size in sorted(n.items())}


def _boot_acc(correct: Mapping[str, np.ndarray], idx: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n_boot, sites) bootstrap accuracies in percent, sites in ``correct``'s order."""
    cols = [np.asarray(correct[k], dtype=np.float64)[idx[k]].mean(axis=1) * 100.0 for k in correct]
    return np.stack(cols, axis=1)


def _interval(samples: np.ndarray, value: float) -> Estimate:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return Estimate(float(value), float(lo), float(hi))


def score(correct: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> Scores:
    """Scores of one method from ``{site: 0/1 array per test question}`` (site order is kept).

    Point values and intervals come from :func:`training.evaluate.fairness`; shown in percent.
    """
    from training.evaluate import fairness

    if not correct or any(len(v) == 0 for v in correct.values()):
        raise ValueError("every site needs at least one scored question")
    acc = {k: float(np.mean(v)) for k, v in correct.items()}
    f = fairness(acc, {k: [bool(x) for x in v] for k, v in correct.items()}, n_boot=n_boot, seed=seed)

    def pct(value: float, ci: tuple[float, float] | None) -> Estimate:
        lo, hi = ci if ci is not None else (value, value)
        return Estimate(value * 100.0, lo * 100.0, hi * 100.0)

    return Scores(
        accuracy={k: pct(acc[k], f.per_dataset_ci.get(k)) for k in correct},
        macro=pct(f.macro, f.macro_ci),
        min=pct(f.min, f.min_ci),
        hmean=pct(f.hmean, f.hmean_ci),
        n={k: len(v) for k, v in correct.items()},
    )


def paired_delta(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """``a - b`` for macro, min and hmean (percentage points), paired bootstrap over the same questions."""
    if list(a) != list(b) or any(len(a[k]) != len(b[k]) for k in a):
        raise ValueError("paired comparison needs the same sites and the same questions")
    idx = _resample_indices({k: len(v) for k, v in a.items()}, n_boot, seed)
    pa = _aggregates(np.array([np.mean(a[k]) * 100.0 for k in a]))
    pb = _aggregates(np.array([np.mean(b[k]) * 100.0 for k in b]))
    ba = _aggregates(_boot_acc(a, idx))
    bb = _aggregates(_boot_acc(b, idx))
    return {m: _interval(ba[m] - bb[m], float(pa[m] - pb[m])) for m in AGGREGATES}
