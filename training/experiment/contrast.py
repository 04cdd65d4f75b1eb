"""Does a drop in answer-text NLL come from knowledge or from format? Score a wrong option's text too.

A model that only learns the answers' style (short noun phrases, the language, no "The answer
is") lowers the NLL of every option's text alike; one that learns which answer is right lowers
the correct option's more. For each model of a finished run (kept with ``--keep-adapters``) this
scores the text of one fixed wrong option per test question (the option after the correct one)
and reports the *margin* NLL(wrong) - NLL(correct) per test set, and its change from the base
model, paired bootstrap.

    python -m training.experiment.contrast results/run-nll
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.adapter_io import read_adapter
from training.evaluate import answer_nll
from training.experiment.config import ExperimentConfig
from training.experiment.dataset import select
from training.experiment.nll import nll_delta, nll_scores
from training.experiment.tasks import Merge, ModelHolder
from training.lora import LoraSettings

log = logging.getLogger("medfed.experiment")


def _models(
    run: Path, cfg: ExperimentConfig, settings: LoraSettings
) -> list[tuple[str, Path | None, list[Merge]]]:
    """(label, adapter, exact merges) for base, single-site, final FedAvg and final exact."""
    ad = run / "adapters"
    out: list[tuple[str, Path | None, list[Merge]]] = [("Base model", None, [])]
    out.append((f"FedAvg round {cfg.rounds}", ad / "fedavg" / f"global{cfg.rounds}", []))
    out += [(f"LoRA (site {s} only)", ad / "single" / s, []) for s in ("IN", "CN", "EN")]
    merges = [
        Merge(f"exact/global{r}", read_adapter(ad / "exact" / f"global{r}"), settings)
        for r in range(1, cfg.rounds + 1)
    ]
    out.append((f"Exact round {cfg.rounds}", None, merges))
    return out


def contrast(run: Path) -> dict[str, Any]:
    """Per model and test set: NLL of the wrong option, margin, margin change from base
    (``contrast.json`` in ``run`` is rewritten after every model, so a cut run keeps its part)."""
    saved = json.loads((run / "config.json").read_text())["config"]
    saved["train_sizes"] = tuple(saved["train_sizes"].values())
    saved["methods"] = tuple(saved["methods"])
    saved["metrics"] = tuple(saved["metrics"])
    cfg = ExperimentConfig(**saved)
    results = json.loads((run / "results.json").read_text())
    sites = select(cfg)
    settings = LoraSettings(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout)
    holder = ModelHolder(cfg.model, cfg.device)
    out: dict[str, Any] = {"definition": __doc__, "models": {}}
    margins: dict[str, dict[str, np.ndarray]] = {}
    for label, adapter, merges in _models(run, cfg, settings):
        model = holder.model_for(merges)
        correct: dict[str, np.ndarray] = {}
        wrong: dict[str, np.ndarray] = {}
        for s in sites:
            qs = list(s.test)
            picks = [(q.answer + 1) % len(q.options) for q in qs]
            correct[s.name] = answer_nll(model, holder.tokenizer, adapter, qs, max_length=cfg.max_length)
            wrong[s.name] = answer_nll(model, holder.tokenizer, adapter, qs, picks, max_length=cfg.max_length)
        margins[label] = {k: wrong[k] - correct[k] for k in correct}
        row: dict[str, Any] = {
            "correct": nll_scores(correct, cfg.bootstrap, cfg.seed).to_dict(),
            "wrong": nll_scores(wrong, cfg.bootstrap, cfg.seed).to_dict(),
            "margin": nll_scores(margins[label], cfg.bootstrap, cfg.seed).to_dict(),
        }
        if label != "Base model":
            d = nll_delta(margins[label], margins["Base model"], cfg.bootstrap, cfg.seed)
            row["margin_change_from_base"] = {k: v.to_dict() for k, v in d.items()}
        out["models"][label] = row
        (run / "contrast.json").write_text(json.dumps(out, indent=2) + "\n")
        log.info("%s: margin %s", label, {k: round(float(v.mean()), 4) for k, v in margins[label].items()})
    out["run_status"] = results.get("status")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiment.contrast", description=__doc__)
    p.add_argument("run", help="a run dir written with --keep-adapters")
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    run = Path(a.run)
    res = contrast(run)
    (run / "contrast.json").write_text(json.dumps(res, indent=2) + "\n")
    for label, row in res["models"].items():
        m = row["margin"]["per_site"]
        print(
            label,
            " ".join(
                f"{k} {v['value']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" for k, v in m.items()
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
