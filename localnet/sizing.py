"""How big a local federation's rounds are: deadlines and per-node work (`Sizing`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sizing:
    """How big each round is: deadlines (seconds) and per-node work."""

    commit_s: int
    aggregate_s: int
    verify_s: int
    max_attempts: int
    train_per_round: int
    max_steps: int
    batch_size: int
    grad_accum: int
    max_length: int
    eval_limit: int
    lora_rank: int
    lora_alpha: int
    fetch_patience_s: float
    poll_interval_s: float
    stagger_s: float
    watch_interval_s: float = 0.2  # [rounds] watch_interval_s: react to a mined event within this


# The default-model demo: 3 nodes x 2 rounds in about 15 minutes on 2 CPU cores.
DEFAULT_SIZING = Sizing(
    commit_s=210,
    aggregate_s=90,
    verify_s=60,
    max_attempts=3,
    train_per_round=16,
    max_steps=8,
    batch_size=1,
    grad_accum=2,
    max_length=256,
    eval_limit=40,
    lora_rank=16,
    lora_alpha=32,
    fetch_patience_s=45.0,
    poll_interval_s=2.0,
    stagger_s=3.0,
)


# Tests: the tiny random model, short deadlines.
TINY_SIZING = Sizing(
    commit_s=25,
    aggregate_s=25,
    verify_s=20,
    max_attempts=3,
    train_per_round=16,
    max_steps=4,
    batch_size=2,
    grad_accum=1,
    max_length=128,
    eval_limit=24,
    lora_rank=4,
    lora_alpha=8,
    fetch_patience_s=10.0,
    poll_interval_s=1.0,  # deadlines and staggers only: the chain watcher (0.2 s) reacts to events
    stagger_s=1.0,
)


def sizing_for(model: str, chain: str = "anvil") -> Sizing:
    """The sizing `up` uses for a model on a chain.

    On Cypherium every transaction waits for a block (about 2 s, more under load) and is sent
    by the wall clock into a chain whose latest timestamp may be stale, so the tiny model's
    phases get more room there: commits of three nodes must be mined within the commit phase.
    """
    base = DEFAULT_SIZING if model == "default" else TINY_SIZING
    if chain != "cypherium" or model == "default":
        return base
    return dataclasses.replace(
        base, commit_s=40, aggregate_s=40, verify_s=30, poll_interval_s=1.0, watch_interval_s=0.5
    )


def dataclass_dict(s: Sizing) -> dict[str, Any]:
    """A Sizing as a plain dict (for logs and the benchmark)."""
    return dataclasses.asdict(s)
