"""Sample-level differential privacy of a site's training: DP-SGD settings and their accounting.

A site that trains with DP-SGD (Abadi et al. 2016) samples each step's batch by Poisson sampling
(each training row independently with probability ``sample_rate``), clips every row's gradient
of the LoRA parameters to L2 norm ``max_grad_norm`` and adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` to their sum (Opacus does both: training/train.py). Every
update the site publishes is then a post-processing of that mechanism, so the whole sequence of
its updates is (epsilon, delta)-DP with respect to one training row, with epsilon from Opacus's
Rényi-DP accountant over all the steps it took (:func:`epsilon_spent`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from training.errors import TrainingError

# What the accountant keeps per round: (noise multiplier, sample rate, steps).
Step = tuple[float, float, int]


@dataclass(frozen=True)
class DpConfig:
    """DP-SGD settings of one local training.

    ``expected_batch`` is the mean Poisson batch size (``sample_rate * rows``), ``steps`` the
    optimiser steps of this training. ``seed`` None (production) draws sampling and noise from the
    operating system's entropy, so no one else can reproduce (and subtract) them; an int makes a
    run repeatable (experiments and tests only)."""

    noise_multiplier: float
    max_grad_norm: float
    expected_batch: int
    steps: int
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and self.max_grad_norm > 0):
            raise TrainingError(
                f"invalid DP-SGD settings: noise multiplier {self.noise_multiplier}, "
                f"max_grad_norm {self.max_grad_norm}; need noise >= 0 and max_grad_norm > 0"
            )
        if self.expected_batch < 1 or self.steps < 1:
            raise TrainingError("invalid DP-SGD settings: expected batch and steps must be >= 1")


def sample_rate(expected_batch: int, rows: int) -> float:
    """Poisson sampling probability of one row for a mean batch of ``expected_batch`` (at most 1)."""
    if rows < 1:
        raise TrainingError("no training rows: DP-SGD needs a non-empty training split")
    return min(1.0, expected_batch / rows)


def steps_per_round(rows: int, expected_batch: int, epochs: int = 1, max_steps: int | None = None) -> int:
    """Optimiser steps of one local round: ``epochs`` passes in expectation, at most ``max_steps``."""
    steps = max(1, math.ceil(rows * epochs / max(1, expected_batch)))
    return min(steps, max_steps) if max_steps else steps


def epsilon_spent(history: Sequence[Step], delta: float) -> float:
    """epsilon of (epsilon, ``delta``)-DP after the DP-SGD steps of ``history`` (RDP accountant)."""
    from opacus.accountants import RDPAccountant

    steps = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not steps:
        return 0.0
    if any(s <= 0 for s, _, _ in steps):
        return math.inf
    acc = RDPAccountant()
    acc.history = steps
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound holds, looser
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=64)
def noise_for_budget(target_epsilon: float, delta: float, rate: float, total_steps: int) -> float:
    """The smallest noise multiplier (to 0.01 in epsilon) that keeps ``total_steps`` DP-SGD steps at
    sampling rate ``rate`` within (``target_epsilon``, ``delta``) by the RDP accountant."""
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon <= 0 or not 0 < delta < 1:
        raise TrainingError(f"invalid privacy budget epsilon {target_epsilon}, delta {delta}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=rate,
                    steps=max(1, total_steps),
                    accountant="rdp",
                )
            )
    except ValueError as exc:
        raise TrainingError(f"no noise multiplier reaches epsilon {target_epsilon}: {exc}") from None


def default_delta(rows: int) -> float:
    """A delta well below 1/rows (the usual rule: a mechanism leaking one whole row with
    probability delta must be unlikely): ``10^-k`` with ``10^-k <= 1/(10 * rows)``."""
    return 10.0 ** -math.ceil(math.log10(max(1, rows) * 10))


def epsilon_mironov(history: Sequence[Step], delta: float) -> float:
    """epsilon by Mironov's (2017) RDP-to-DP conversion, ``min_a rdp(a) + log(1/delta)/(a - 1)``,
    over the same orders: what TF Privacy's ``compute_dp_sgd_privacy`` and its published tables
    use. :func:`epsilon_spent` (Opacus's tighter conversion, Balle et al. 2020) is never above it."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = RDPAccountant.DEFAULT_ALPHAS
    total = [0.0] * len(orders)
    for s, q, n in history:
        if n > 0:
            rdp = compute_rdp(q=q, noise_multiplier=s, steps=n, orders=orders)
            total = [t + float(r) for t, r in zip(total, rdp, strict=True)]
    return min(r + math.log(1 / delta) / (a - 1) for r, a in zip(total, orders, strict=True))
