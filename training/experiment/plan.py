"""Measure per-question training and evaluation cost on this machine and project a run's wall time.

``medfed-experiment --calibrate`` uses this to size a run before starting it: cost grows with
training questions x local passes and with test questions x evaluations.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from training.adapter_io import write_canonical_adapter
from training.experiment import scoring
from training.experiment.config import SITE_NAMES, ExperimentConfig
from training.experiment.dataset import select
from training.lora import LoraSettings, initial_adapter_state
from training.models import base_model_id, load_base_model
from training.train import TrainConfig, train_local

log = logging.getLogger("medfed.experiment")


@dataclass(frozen=True)
class Costs:
    """Measured seconds per training question and per evaluated question, per site."""

    train_s: dict[str, float]
    eval_s: dict[str, float]


def passes(cfg: ExperimentConfig) -> tuple[int, int]:
    """(local training rounds over all sites, evaluations over all test sets) the run performs."""
    m, r = cfg.methods, cfg.rounds
    train_rounds = 0
    if any(x in m for x in ("single", "fedavg", "exact")):
        train_rounds = 1 + (r - 1) * sum(1 for x in ("single", "fedavg", "exact") if x in m)
    evals = (1 if "base" in m else 0) + (r if "fedavg" in m else 0) + (r if "exact" in m else 0)
    evals += cfg.sites if "single" in m else 0
    return train_rounds, evals


def project(cfg: ExperimentConfig, costs: Costs, load_s: float = 20.0) -> float:
    """Projected wall seconds of ``cfg`` given measured ``costs``."""
    train_rounds, evals = passes(cfg)
    per_round = sum(cfg.train_size(s) * cfg.local_epochs * costs.train_s[s] for s in SITE_NAMES)
    per_eval = sum(cfg.eval_size * costs.eval_s[s] for s in SITE_NAMES)
    return load_s + train_rounds * per_round + evals * per_eval


def measure(cfg: ExperimentConfig, n: int = 8) -> Costs:
    """Train ``n`` questions (n/grad_accum steps) and score ``n`` test questions per site; time them."""
    model, tok = load_base_model(cfg.model, cfg.device)
    settings = LoraSettings(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    sites = select(cfg)
    train_s: dict[str, float] = {}
    eval_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init"
        write_canonical_adapter(
            initial_adapter_state(model, settings, cfg.seed), settings, base_model_id(cfg.model), init
        )
        # Warm-up (first calls allocate), not timed.
        scoring.correctness(model, tok, list(sites[0].test[:2]), None, cfg.max_length)
        for s in sites:
            qs = list(s.train[:n])
            tc = TrainConfig(
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                grad_accum=cfg.grad_accum,
                max_length=cfg.max_length,
                seed=cfg.seed,
                device=cfg.device,
            )
            t = time.perf_counter()
            train_local(model, tok, init, qs, settings, tc, Path(tmp) / s.name, progress=False)
            train_s[s.name] = (time.perf_counter() - t) / len(qs)
            tq = list(s.test[:n])
            t = time.perf_counter()
            scoring.correctness(model, tok, tq, init, cfg.max_length)
            eval_s[s.name] = (time.perf_counter() - t) / len(tq)
            log.info(
                "site %s: %.2f s per training question, %.3f s per test question",
                s.name,
                train_s[s.name],
                eval_s[s.name],
            )
    return Costs(train_s, eval_s)
