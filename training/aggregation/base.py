"""The aggregation interface: typed inputs and the strategy protocol.

Determinism rules every strategy follows (so any verifier recomputes the same bytes): inputs
sorted by lower-cased member address, weights ``n_i / sum(n)`` computed once in float64,
accumulation in float64 with a separate multiply and add per input (numpy ufuncs, single
thread, fixed order), one cast to float32 at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from training.errors import AggregationError


@dataclass(frozen=True)
class AggregationInput:
    """One member's update: its address, its sample count (the weight), its adapter tensors."""

    member: str
    num_samples: int
    state: dict[str, np.ndarray]


class Strategy(Protocol):
    """An aggregation strategy: deterministic function of the (already ordered) inputs."""

    name: str

    def __call__(self, inputs: Sequence[AggregationInput], weights: np.ndarray) -> dict[str, np.ndarray]: ...


def ordered(inputs: Sequence[AggregationInput]) -> list[AggregationInput]:
    """Inputs in ascending lower-cased member order; rejects empty, duplicate or inconsistent inputs."""
    if not inputs:
        raise AggregationError("nothing to aggregate: pass at least one update")
    out = sorted(inputs, key=lambda i: i.member.lower())
    members = [i.member.lower() for i in out]
    if len(set(members)) != len(members):
        raise AggregationError("duplicate member in aggregation inputs; each member contributes one update")
    keys = sorted(out[0].state)
    for item in out:
        if item.num_samples <= 0:
            raise AggregationError(
                f"member {item.member} reports {item.num_samples} samples; must be positive"
            )
        if sorted(item.state) != keys:
            raise AggregationError(
                f"member {item.member}'s adapter has different tensor names from {out[0].member}'s"
            )
    return out


def weights_of(inputs: Sequence[AggregationInput]) -> np.ndarray:
    """``n_i / sum(n)`` in float64, computed once, in input order."""
    counts = np.array([i.num_samples for i in inputs], dtype=np.float64)
    total = float(sum(int(i.num_samples) for i in inputs))
    return counts / total


def as_f32(value: np.ndarray, member: str, key: str) -> np.ndarray:
    """The input tensor as a float32 numpy array (rejecting anything else)."""
    arr = np.asarray(value)
    if arr.dtype != np.float32:
        raise AggregationError(f"member {member}'s tensor {key!r} is {arr.dtype}, expected float32")
    return arr
