"""results.png: accuracy per test set by method, and Macro/Min/H-mean per round of the federated runs;
results_nll.png: the same two panels for the answer-text NLL (worst site and mean per round)."""

from __future__ import annotations

import os
from pathlib import Path

from training.experiment.config import SITES
from training.experiment.report import best_single, best_single_nll, headline
from training.experiment.runner import RunState

_ROUND_STYLE = {"macro": ("Macro-Acc", "-"), "min": ("Min-Acc", "--"), "hmean": ("H-mean", ":")}
_METHOD_COLOR = {"fedavg": "tab:blue", "exact": "tab:orange"}


def plot_results(state: RunState, path: str | os.PathLike[str]) -> Path:
    """Draw the two panels into a PNG at ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in SITES]
    rows = [e for e in headline(state) if e.scores is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})

    width = 0.8 / max(len(rows), 1)
    for j, ev in enumerate(rows):
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(names))]
        acc = ev.scores.accuracy if ev.scores is not None else {}
        vals = [acc[n].value for n in names]
        err = [
            [v - acc[n].lo for v, n in zip(vals, names, strict=True)],
            [acc[n].hi - v for v, n in zip(vals, names, strict=True)],
        ]
        ax1.bar(xs, vals, width, yerr=err, capsize=2, label=ev.label)
    ax1.axhline(25.0, color="grey", lw=0.8, ls=":", label="chance (4 options)")
    ax1.set_xticks(range(len(names)), ["MedQA-CN", "MedQA-EN", "MedMCQA-IN"])
    ax1.set_ylabel("accuracy (%) with bootstrap 95% CI")
    ax1.set_title("Accuracy per test set by method")
    ax1.legend(fontsize=7, loc="upper right")

    for method, all_recs in state.rounds.items():
        recs = [r for r in all_recs if r.get("scores")]
        rounds = [r["round"] for r in recs]
        for key, (label, ls) in _ROUND_STYLE.items():
            ax2.plot(
                rounds,
                [r["scores"][key]["value"] for r in recs],
                ls,
                marker="o",
                color=_METHOD_COLOR.get(method, "black"),
                label=f"{method} {label}",
            )
    best = best_single(state)
    if best is not None and best.scores is not None:
        ax2.axhline(
            best.scores.macro.value, color="tab:green", lw=1, label=f"best single ({best.site}) Macro"
        )
        ax2.axhline(best.scores.min.value, color="tab:green", lw=1, ls="--", label="best single Min")
    base = [e for e in state.evaluations if e.method == "base" and e.scores is not None]
    if base and base[0].scores is not None:
        ax2.axhline(base[0].scores.macro.value, color="grey", lw=1, label="base Macro")
    ax2.set_xlabel("communication round")
    ax2.set_ylabel("%")
    ax2.set_title("Federated runs per round")
    if state.rounds:
        ax2.set_xticks(sorted({r["round"] for recs in state.rounds.values() for r in recs}))
    ax2.legend(fontsize=7, loc="best")

    title = f"medfed non-IID reproduction, model {state.config.model}"
    if state.status != "complete":
        title += " (PARTIAL)"
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


_NLL_STYLE = {"worst": ("worst site", "--"), "mean": ("mean", "-")}


def plot_nll(state: RunState, path: str | os.PathLike[str]) -> Path | None:
    """Answer-text NLL per test set by method (with 95% CIs), and worst/mean per round; None
    when the run has no NLL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in SITES]
    rows = [e for e in headline(state) if e.nll_scores is not None]
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
    width = 0.8 / len(rows)
    for j, ev in enumerate(rows):
        per = ev.nll_scores.per_site if ev.nll_scores is not None else {}
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(names))]
        vals = [per[n].value for n in names]
        err = [
            [v - per[n].lo for v, n in zip(vals, names, strict=True)],
            [per[n].hi - v for v, n in zip(vals, names, strict=True)],
        ]
        ax1.bar(xs, vals, width, yerr=err, capsize=2, label=ev.label)
    ax1.set_xticks(range(len(names)), ["MedQA-CN", "MedQA-EN", "MedMCQA-IN"])
    ax1.set_ylabel("answer-text NLL (nats/token), 95% CI; lower is better")
    ax1.set_title("Answer-text NLL per test set by method")
    ax1.legend(fontsize=7, loc="lower right")

    for method, all_recs in state.rounds.items():
        recs = [r for r in all_recs if r.get("nll")]
        for key, (label, ls) in _NLL_STYLE.items():
            ax2.plot(
                [r["round"] for r in recs],
                [r["nll"][key]["value"] for r in recs],
                ls,
                marker="o",
                color=_METHOD_COLOR.get(method, "black"),
                label=f"{method} {label}",
            )
    best = best_single_nll(state)
    if best is not None and best.nll_scores is not None:
        ax2.axhline(
            best.nll_scores.mean.value, color="tab:green", lw=1, label=f"best single ({best.site}) mean"
        )
        ax2.axhline(
            best.nll_scores.worst.value, color="tab:green", lw=1, ls="--", label="best single worst site"
        )
    base = next((e for e in rows if e.method == "base"), None)
    if base is not None and base.nll_scores is not None:
        ax2.axhline(base.nll_scores.mean.value, color="grey", lw=1, label="base mean")
        ax2.axhline(base.nll_scores.worst.value, color="grey", lw=1, ls="--", label="base worst site")
    ax2.set_xlabel("communication round")
    ax2.set_ylabel("nats/token")
    ax2.set_title("Federated runs per round (answer-text NLL)")
    if state.rounds:
        ax2.set_xticks(sorted({r["round"] for recs in state.rounds.values() for r in recs}))
    ax2.legend(fontsize=7, loc="best")
    title = f"medfed non-IID study on answer-text NLL, model {state.config.model}"
    if state.status != "complete":
        title += " (PARTIAL)"
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
