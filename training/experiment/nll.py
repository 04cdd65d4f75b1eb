"""Answer-text NLL per test set with bootstrap 95% intervals, and its fairness figures.

A question's value is the mean negative log-likelihood (nats per token) of its correct answer's
text given the question (:func:`training.evaluate.answer_nll`); a test set's value is the mean
over its questions. Lower is better, so the analogue of Min-Acc is the *worst* (highest) site's
NLL, and of Macro-Acc the mean over sites. Resampling is within each test set, with one set of
resampled indices per seed, so two methods compared with the same seed are paired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.experiment.metrics import Estimate

NLL_AGGREGATES = ("worst", "mean")


@dataclass(frozen=True)
class NllScores:
    """One model's answer-text NLL per test set, the worst site's and the mean over sites."""

    per_site: dict[str, Estimate]
    worst: Estimate
    mean: Estimate
    n: dict[str, int]

    def aggregate(self, name: str) -> Estimate:
        return {"worst": self.worst, "mean": self.mean}[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_site": {k: v.to_dict() for k, v in self.per_site.items()},
            "worst": self.worst.to_dict(),
            "mean": self.mean.to_dict(),
            "n": dict(self.n),
        }


def _boot_means(nll: Mapping[str, np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, sites) resampled per-site means; the indices depend only on sizes and seed."""
    rng = np.random.default_rng(seed)
    idx = {k: rng.integers(0, len(nll[k]), size=(n_boot, len(nll[k]))) for k in sorted(nll)}
    return np.stack([np.asarray(nll[k], dtype=np.float64)[idx[k]].mean(axis=1) for k in nll], axis=1)


def _interval(samples: np.ndarray, value: float) -> Estimate:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return Estimate(float(value), float(lo), float(hi))


def _check(nll: Mapping[str, np.ndarray]) -> None:
    if not nll or any(len(v) == 0 or not np.isfinite(v).all() for v in nll.values()):
        raise ValueError("every site needs at least one finite per-question NLL")


def nll_scores(nll: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> NllScores:
    """Scores from ``{site: per-question NLL}`` (site order kept)."""
    _check(nll)
    point = np.array([np.mean(v) for v in nll.values()])
    boot = _boot_means(nll, n_boot, seed)
    return NllScores(
        per_site={k: _interval(boot[:, j], float(point[j])) for j, k in enumerate(nll)},
        worst=_interval(boot.max(axis=1), float(point.max())),
        mean=_interval(boot.mean(axis=1), float(point.mean())),
        n={k: len(v) for k, v in nll.items()},
    )


def nll_delta(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """``a - b`` per site, for the worst site and for the mean (nats/token; negative: ``a`` is
    better), paired bootstrap over the same questions."""
    _check(a)
    _check(b)
    if list(a) != list(b) or any(len(a[k]) != len(b[k]) for k in a):
        raise ValueError("paired comparison needs the same sites and the same questions")
    pa = np.array([np.mean(v) for v in a.values()])
    pb = np.array([np.mean(v) for v in b.values()])
    ba, bb = _boot_means(a, n_boot, seed), _boot_means(b, n_boot, seed)
    out = {k: _interval(ba[:, j] - bb[:, j], float(pa[j] - pb[j])) for j, k in enumerate(a)}
    out["worst"] = _interval(ba.max(axis=1) - bb.max(axis=1), float(pa.max() - pb.max()))
    out["mean"] = _interval(ba.mean(axis=1) - bb.mean(axis=1), float(pa.mean() - pb.mean()))
    return out
