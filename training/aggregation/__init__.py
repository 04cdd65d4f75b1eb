"""Deterministic aggregation of LoRA adapters: ``STRATEGIES`` by name and :func:`aggregate`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.aggregation.base import AggregationInput, Strategy, ordered, weights_of
from training.aggregation.exact import Exact, merge_exact_delta
from training.aggregation.fedavg import FedAvg
from training.errors import AggregationError

STRATEGIES: dict[str, Strategy] = {"fedavg": FedAvg(), "exact": Exact()}


def aggregate(name: str, inputs: Sequence[AggregationInput]) -> dict[str, np.ndarray]:
    """Aggregate member updates with strategy ``name``; the result does not depend on input order."""
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise AggregationError(f"unknown aggregation strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    items = ordered(inputs)
    return strategy(items, weights_of(items))


__all__ = ["STRATEGIES", "AggregationInput", "Strategy", "aggregate", "merge_exact_delta"]
