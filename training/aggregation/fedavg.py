"""``fedavg``: the weighted average of the LoRA A and B factors (rank stays r)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.aggregation.base import AggregationInput, as_f32
from training.errors import AggregationError


class FedAvg:
    """sum_i w_i * X_i for every tensor X, accumulated in float64, cast once to float32."""

    name = "fedavg"

    def __call__(self, inputs: Sequence[AggregationInput], weights: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in sorted(inputs[0].state):
            shape = np.shape(inputs[0].state[key])
            acc = np.zeros(shape, dtype=np.float64)
            tmp = np.empty(shape, dtype=np.float64)
            for item, w in zip(inputs, weights, strict=True):
                x = as_f32(item.state[key], item.member, key)
                if x.shape != shape:
                    raise AggregationError(
                        f"member {item.member}'s {key!r} has shape {x.shape}, expected {shape}"
                    )
                np.copyto(tmp, x)  # exact float32 -> float64 upcast
                np.multiply(tmp, w, out=tmp)  # one rounding per product
                np.add(acc, tmp, out=acc)  # one rounding per sum, members in address order
            out[key] = acc.astype(np.float32)
        return out
