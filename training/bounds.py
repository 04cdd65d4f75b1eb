"""Bounds on member updates that every verifier checks the same way, and the robust weighting.

An update that is finite can still poison the federation (B2: every value 1e30). These rules are
part of the federation's config hash (:func:`federation_config_hash`), so every member applies the
same ones, and they are byte-deterministic, so verifiers recompute the aggregate bit for bit:

- **validity** (an update outside them is left out, with the reason, and its author is not paid
  as a contributor): every value ``|x| <= max_abs``; the update's distance from the round's
  reference adapter ``||u - ref||_2 <= max_update_norm`` (0 = no absolute limit);
- **norm clipping against the round's median** (``clip_factor`` c, 0 = off): with
  ``d_i = ||u_i - ref||_2`` and ``m`` the lower median of the included updates' ``d_i``, each
  update becomes ``ref + s_i (u_i - ref)`` with ``s_i = min(1, c m / d_i)``: no single member moves
  the global adapter further than c times what the median member does;
- **sample counts** (the self-reported ``numSamples`` weights): capped at ``max_samples``
  (0 = no cap) and at ``samples_factor`` times the lower median of the round's counts (0 = off);
- **work evidence** (issue 24, free-riders), over the round's candidate updates (each valid on
  its own), with ``d_i = u_i - ref``: an update that moves less than ``min_update_ratio`` times
  the lower median of the *other* candidates' ``||d_j||`` is invalid (the reference sent back,
  or with a little noise: from 2 candidates up; 0 = off); with ``min_agreement`` a > 0 and at
  least ``AGREEMENT_MIN_UPDATES`` candidates, an update whose delta has cosine below a with the
  sum of the others' deltas is invalid too (noise of an honest norm, a replayed file; off by
  default: an honest site with other data scores like noise on small models, docs/threat-model.md).

Norms are sums of float64 squares added with ``math.fsum`` (correctly rounded, so independent of
the machine's SIMD width or summation order); scaling is elementwise float64 with separate
subtract, multiply and add, cast once to float32.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from training.aggregation.base import AggregationInput
from training.errors import AdapterInvalid, TrainingError
from training.lora import LoraSettings


@dataclass(frozen=True)
class PrivacyPolicy:
    """What a federation may require of every member's training (docs/privacy.md): DP-SGD with a
    noise multiplier of at least ``min_noise_multiplier`` and per-example clipping at most
    ``max_grad_norm``. All zero = no requirement (and no change to the config hash)."""

    min_noise_multiplier: float = 0.0
    max_grad_norm: float = 0.0

    @property
    def required(self) -> bool:
        return self.min_noise_multiplier > 0 or self.max_grad_norm > 0

    def canonical(self) -> dict[str, Any]:
        return {
            "max_grad_norm": float(self.max_grad_norm),
            "min_noise_multiplier": float(self.min_noise_multiplier),
        }

    def refusal(self, mode: str, noise_multiplier: float, max_grad_norm: float) -> str | None:
        """Why a member training with these settings falls short of the policy (None: it does not)."""
        if not self.required:
            return None
        need = (
            f"the federation requires DP-SGD with noise multiplier >= {self.min_noise_multiplier:g}"
            + (f" and max_grad_norm <= {self.max_grad_norm:g}" if self.max_grad_norm > 0 else "")
            + " (in its on-chain config hash)"
        )
        if mode != "dp-sgd":
            return f'{need}; set [privacy] mode = "dp-sgd"'
        if noise_multiplier < self.min_noise_multiplier:
            return (
                f"{need}; this budget gives noise multiplier {noise_multiplier:.3f}: lower "
                "[privacy] target_epsilon or raise [privacy] rounds"
            )
        if self.max_grad_norm > 0 and max_grad_norm > self.max_grad_norm:
            return f"{need}; lower [privacy] max_grad_norm (now {max_grad_norm:g})"
        return None


@dataclass(frozen=True)
class UpdateBounds:
    """The federation's limits on one member's update (see the module docstring)."""

    max_abs: float = 100.0
    max_update_norm: float = 0.0
    clip_factor: float = 3.0
    max_samples: int = 0
    samples_factor: float = 4.0
    min_update_ratio: float = 0.1
    min_agreement: float = 0.0

    def __post_init__(self) -> None:
        if not (self.max_abs >= 0 and self.max_update_norm >= 0 and self.clip_factor >= 0):
            raise TrainingError(f"invalid update bounds {self}: limits must be >= 0 (0 = off)")
        if self.max_samples < 0 or self.samples_factor < 0:
            raise TrainingError(f"invalid update bounds {self}: sample caps must be >= 0 (0 = off)")
        if not 0.0 <= self.min_update_ratio < 1.0:
            raise TrainingError(f"invalid update bounds {self}: min_update_ratio must be in [0, 1) (0 = off)")
        if not 0.0 <= self.min_agreement < 1.0:
            raise TrainingError(f"invalid update bounds {self}: min_agreement must be in [0, 1) (0 = off)")

    def canonical(self) -> dict[str, Any]:
        """The bounds as plain numbers (what the federation config hash covers: see
        `federation_config_hash` for the issue-24 rules, hashed only when on)."""
        return {
            "clip_factor": float(self.clip_factor),
            "max_abs": float(self.max_abs),
            "max_samples": int(self.max_samples),
            "max_update_norm": float(self.max_update_norm),
            "min_agreement": float(self.min_agreement),
            "min_update_ratio": float(self.min_update_ratio),
            "samples_factor": float(self.samples_factor),
        }


NO_BOUNDS = UpdateBounds(
    max_abs=0.0,
    max_update_norm=0.0,
    clip_factor=0.0,
    max_samples=0,
    samples_factor=0.0,
    min_update_ratio=0.0,
    min_agreement=0.0,
)
# The agreement rule needs this many candidates: with two, each is only compared with the other,
# and an honest update cannot be told from a free-rider's (both would fail).
AGREEMENT_MIN_UPDATES = 3
OPTIONAL_BOUNDS = ("min_agreement", "min_update_ratio")  # hashed only when on (non-zero)


@dataclass(frozen=True)
class FederationRules:
    """Everything members must agree on besides the LoRA shape: how updates are combined and
    bounded, and after how many failed rounds in a row a global adapter is abandoned."""

    strategy: str = "fedavg"
    bounds: UpdateBounds = UpdateBounds()
    fallback_after: int = 2
    privacy: PrivacyPolicy = PrivacyPolicy()

    def canonical(self) -> dict[str, Any]:
        """The rules as plain values (what the federation config hash covers; a privacy policy
        only when it requires something, so federations without one keep their hash)."""
        out: dict[str, Any] = {
            "bounds": self.bounds.canonical(),
            "fallback_after": int(self.fallback_after),
            "strategy": self.strategy,
        }
        if self.privacy.required:
            out["privacy"] = self.privacy.canonical()
        return out

    def with_bounds(self, **changes: Any) -> FederationRules:
        """The same rules with some bounds changed."""
        return replace(self, bounds=replace(self.bounds, **changes))


def federation_config_hash(settings: LoraSettings, rules: FederationRules) -> str:
    """sha256 hex of the canonical JSON of the LoRA settings and the federation rules: the value
    deployers record on-chain as ``loraConfigHash`` and every node checks at start."""
    doc = {"lora": settings.canonical(), "rules": rules.canonical()}
    # the issue-24 rules enter the hash only when on: a federation deployed before them keeps its
    # hash with min_update_ratio = 0 (and min_agreement = 0)
    for key in OPTIONAL_BOUNDS:
        if not doc["rules"]["bounds"][key]:
            del doc["rules"]["bounds"][key]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _sq_sum(delta: np.ndarray) -> float:
    sq = np.multiply(delta, delta)  # elementwise float64, IEEE exact per element
    return math.fsum(sq.ravel().tolist())


def delta_norm(state: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """``||state - reference||_2`` over every tensor, in float64, machine independent."""
    total = 0.0
    parts = []
    for key in sorted(state):
        u = np.asarray(state[key], dtype=np.float64)
        r = np.asarray(reference[key], dtype=np.float64) if key in reference else np.zeros_like(u)
        if r.shape != u.shape:
            raise AdapterInvalid(f"tensor {key!r} has shape {u.shape}, the reference has {r.shape}")
        parts.append(_sq_sum(np.subtract(u, r)))
    total = math.fsum(parts)
    return math.sqrt(total)


def check_update_bounds(
    state: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], bounds: UpdateBounds
) -> float:
    """Raise AdapterInvalid naming the bound an update breaks; return its distance from ``reference``."""
    if bounds.max_abs:
        for key in sorted(state):
            arr = np.asarray(state[key])
            if arr.size == 0:
                continue
            peak = float(np.max(np.abs(arr)))
            if not peak <= bounds.max_abs:  # also catches NaN
                raise AdapterInvalid(
                    f"tensor {key!r} has |value| {peak:.3g}, which exceeds the federation's bound "
                    f"max_abs = {bounds.max_abs:g}"
                )
    norm = delta_norm(state, reference)
    if not math.isfinite(norm) or (bounds.max_update_norm and norm > bounds.max_update_norm):
        raise AdapterInvalid(
            f"update is {norm:.3g} away from the round's reference adapter, which exceeds the "
            f"federation's bound max_update_norm = {bounds.max_update_norm:g}"
        )
    return norm


def lower_median(values: Sequence[float]) -> float:
    """The lower median (an element of ``values``): robust to one outlier from 2 members up."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def clip_scales(norms: Sequence[float], clip_factor: float) -> list[float]:
    """``s_i = min(1, c * m / d_i)`` with m the lower median of ``norms`` (1.0 when clipping is off)."""
    if not clip_factor or not norms:
        return [1.0] * len(norms)
    limit = clip_factor * lower_median(norms)
    return [1.0 if d <= limit else limit / d for d in norms]


def capped_samples(counts: Sequence[int], bounds: UpdateBounds) -> list[int]:
    """Sample counts used as weights: at most ``max_samples`` and ``samples_factor`` x the lower
    median of the counts (each at least 1). Integers, so the weights stay exact to compute."""
    out = [int(c) for c in counts]
    if bounds.max_samples:
        out = [min(c, bounds.max_samples) for c in out]
    if bounds.samples_factor and out:
        cap = max(1, math.floor(bounds.samples_factor * lower_median(out)))
        out = [min(c, cap) for c in out]
    return [max(1, c) for c in out]


def bounded_inputs(
    inputs: Sequence[AggregationInput], reference: Mapping[str, np.ndarray], bounds: UpdateBounds
) -> list[AggregationInput]:
    """The inputs with sample counts capped and each update clipped towards ``reference``.

    Deterministic: depends only on the set of inputs (order by member), never on machine or order.
    An input that needs no clipping keeps its exact tensors."""
    items = sorted(inputs, key=lambda i: i.member.lower())
    norms = [delta_norm(i.state, reference) for i in items]
    scales = clip_scales(norms, bounds.clip_factor)
    counts = capped_samples([i.num_samples for i in items], bounds)
    out = []
    for item, s, n in zip(items, scales, counts, strict=True):
        state = item.state
        if s < 1.0:
            state = {}
            for key in sorted(item.state):
                u = np.asarray(item.state[key], dtype=np.float64)
                r = np.asarray(reference[key], dtype=np.float64)
                d = np.subtract(u, r)
                np.multiply(d, s, out=d)
                np.add(r, d, out=d)
                state[key] = d.astype(np.float32)
        out.append(AggregationInput(item.member, n, state))
    return out


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum(np.multiply(a, b).ravel().tolist())


def agreement(
    states: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Each member's ``cos_i = <d_i, S - d_i> / (||d_i|| ||S - d_i||)``, ``d_i`` its delta from
    ``reference`` and ``S`` the sum of every member's delta (float64, added in member order; dot
    products and norms with ``math.fsum``): the same numbers on every machine. A zero delta (the
    reference committed back), or no other delta, gives 0."""
    keys = sorted(reference)
    ref = {k: np.asarray(reference[k], np.float64) for k in keys}
    deltas = {m: {k: np.subtract(np.asarray(states[m][k], np.float64), ref[k]) for k in keys} for m in states}
    total = {k: np.zeros_like(ref[k]) for k in keys}
    for m in sorted(states):
        for k in keys:
            np.add(total[k], deltas[m][k], out=total[k])
    out: dict[str, float] = {}
    for m in sorted(states):
        rest = {k: np.subtract(total[k], deltas[m][k]) for k in keys}
        dot = math.fsum(_dot(deltas[m][k], rest[k]) for k in keys)
        own = math.sqrt(math.fsum(_dot(deltas[m][k], deltas[m][k]) for k in keys))
        others = math.sqrt(math.fsum(_dot(rest[k], rest[k]) for k in keys))
        out[m] = dot / (own * others) if own > 0 and others > 0 else 0.0
    return out


def unconfirmed(
    states: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, np.ndarray], bounds: UpdateBounds
) -> dict[str, str]:
    """Members (keys of ``states``, the round's candidates) whose update carries no evidence of
    training (the work-evidence rules in the module docstring), each with the reason. One pass:
    the verdict on each candidate depends only on the candidate set, which the aggregator names
    (included + claimed invalid) and verifiers recompute."""
    out: dict[str, str] = {}
    if bounds.min_update_ratio and len(states) >= 2:
        norms = {m: delta_norm(states[m], reference) for m in sorted(states)}
        for m, d in norms.items():
            median = lower_median([x for k, x in norms.items() if k != m])
            if d < bounds.min_update_ratio * median:
                out[m] = (
                    f"update moves {d:.3g} from the round's reference adapter, less than the federation's "
                    f"min_update_ratio = {bounds.min_update_ratio:g} x the other updates' median {median:.3g}"
                    " (no training)"
                )
    for m, why in disagreeing(states, reference, bounds.min_agreement).items():
        out.setdefault(m, why)
    return out


def disagreeing(
    states: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, np.ndarray], min_agreement: float
) -> dict[str, str]:
    """Members (keys of ``states``) whose update fails the agreement rule, each with the reason:
    its `agreement` cosine is below ``min_agreement``, with at least ``AGREEMENT_MIN_UPDATES``
    candidates. One pass: the verdict on each candidate depends only on the candidate set, which
    the aggregator names (included + claimed invalid) and verifiers recompute."""
    if not min_agreement or len(states) < AGREEMENT_MIN_UPDATES:
        return {}
    return {
        m: f"update carries no training the round's other updates confirm: cosine {cos:.3f} with "
        f"the sum of theirs, below the federation's min_agreement = {min_agreement:g}"
        + (" (it is the round's reference adapter)" if cos == 0.0 else "")
        for m, cos in agreement(states, reference).items()
        if not cos >= min_agreement
    }
