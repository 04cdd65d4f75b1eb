"""Choose the learning rate and local steps of an answer-text run on validation rows carved from
the training splits (never from test rows).

For each learning rate, every site trains its single-site LoRA with the run's schedule (same
rows, seeds and rounds as :class:`training.experiment.runner.Runner` would) and its own
validation rows are scored (answer-text NLL) after each round. The choice is the (lr, rounds)
pair with the lowest mean validation NLL over the sites.

    python -m training.experiment.tune --train-sizes 16,6,20 --lrs 1e-3,3e-3 --out results/tune
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Question, load_source
from training.evaluate import answer_nll
from training.experiment.config import SITES, ExperimentConfig
from training.experiment.dataset import SiteData, select, stem, train_seed
from training.experiment.tasks import ModelHolder, TrainJob, initial_adapter, run_train, write_adapter_files
from training.lora import LoraSettings
from training.models import base_model_id
from training.train import TrainConfig

log = logging.getLogger("medfed.experiment")


def validation_rows(
    cfg: ExperimentConfig, sites: list[SiteData], size: int
) -> dict[str, tuple[Question, ...]]:
    """``size`` rows per site from its training split that the run neither trains nor tests on."""
    used = {stem(q) for s in sites for q in (*s.train, *s.test)}
    out: dict[str, tuple[Question, ...]] = {}
    for site in SITES:
        pool = [q for q in load_source(site.source, site.train_split, cfg.data_dir) if stem(q) not in used]
        out[site.name] = tuple(random.Random(f"{cfg.seed}:{site.name}:validation").sample(pool, size))
    return out


def tune(cfg: ExperimentConfig, lrs: list[float], val_size: int) -> dict[str, Any]:
    """Validation NLL per lr, round and site (and the base model's); the chosen (lr, rounds)."""
    sites = select(cfg)
    val = validation_rows(cfg, sites, val_size)
    holder = ModelHolder(cfg.model, cfg.device)
    holder.load()
    settings = LoraSettings(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    name = base_model_id(cfg.model)
    init = initial_adapter(holder, settings, cfg.seed, name)

    def val_nll(adapter: Path | None, site: str) -> float:
        return float(
            np.mean(answer_nll(holder.model, holder.tokenizer, adapter, val[site], max_length=cfg.max_length))
        )

    started = time.perf_counter()
    result: dict[str, Any] = {"base": {s.name: val_nll(None, s.name) for s in sites}, "lr": {}}
    log.info("base validation NLL %s", result["base"])
    with tempfile.TemporaryDirectory(prefix="medfed-tune-") as tmp:
        for lr in lrs:
            curves: dict[str, list[float]] = {s.name: [] for s in sites}
            for i, s in enumerate(sites):
                start = init
                for r in range(1, cfg.rounds + 1):
                    tc = TrainConfig(
                        lr=lr,
                        batch_size=cfg.batch_size,
                        grad_accum=cfg.grad_accum,
                        epochs=cfg.local_epochs,
                        max_length=cfg.max_length,
                        seed=train_seed(cfg.seed, r, i, len(sites)),
                        device=cfg.device,
                        target=cfg.target,
                    )
                    job = TrainJob(s.name, r, "single", start, s.train, settings, tc, name)
                    start = run_train(holder, job).files
                    adapter = write_adapter_files(start, Path(tmp) / f"{lr}-{s.name}-{r}")
                    curves[s.name].append(val_nll(adapter, s.name))
                    log.info("lr %g site %s round %d: validation NLL %.4f", lr, s.name, r, curves[s.name][-1])
            result["lr"][f"{lr:g}"] = curves
    best = min(
        ((lr, r) for lr in result["lr"] for r in range(cfg.rounds)),
        key=lambda k: float(np.mean([c[k[1]] for c in result["lr"][k[0]].values()])),
    )
    result["chosen"] = {"lr": float(best[0]), "rounds": best[1] + 1}
    result["validation_rows"] = {k: len(v) for k, v in val.items()}
    result["config"] = cfg.to_dict()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiment.tune", description=__doc__)
    p.add_argument("--train-sizes", default="16,6,20")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lrs", default="1e-3,3e-3")
    p.add_argument("--val-size", type=int, default=10)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    sizes = tuple(int(x) for x in a.train_sizes.split(","))
    cfg = replace(
        ExperimentConfig(),
        model=a.model,
        train_sizes=(sizes[0], sizes[1], sizes[2]),
        rounds=a.rounds,
        max_length=a.max_length,
        grad_accum=a.grad_accum,
        target="text",
    )
    res = tune(cfg, [float(x) for x in a.lrs.split(",")], a.val_size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["chosen"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
