"""Utility of DP-SGD: FedAvg runs of ``medfed-experiment`` with and without ``--dp-epsilon``
(same seeds) side by side, as a markdown table and a plot (docs/results.md, docs/privacy.md).

    python -m training.experiment.dp_compare RUN_DIR... [--plot docs/img/results_dp.png]

Each RUN_DIR holds a results.json; the run's epsilon comes from its config (none = no DP).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.experiment.config import SITES


def load_run(path: Path) -> dict[str, Any]:
    """The FedAvg figures of one run: epsilon, and per round {site: (nll, lo, hi), acc: {...}}."""
    doc = json.loads((path / "results.json").read_text())
    rounds = []
    for r in doc["rounds"].get("fedavg", []):
        nll = {s: r["nll"]["per_site"][s] for s in r["nll"]["per_site"]} if r.get("nll") else {}
        acc = r["scores"]["accuracy"] if r.get("scores") else {}
        rounds.append({"round": r["round"], "nll": nll, "accuracy": acc})
    label = _label(doc["config"].get("dp_epsilon"))
    if not rounds:  # a base-only run (--methods base): the untrained reference
        for e in doc["evaluations"]:
            if e["method"] == "base" and e.get("answer_nll"):
                rounds = [{"round": 0, "nll": e["answer_nll"]["per_site"], "accuracy": e["accuracy"]}]
                label = "base model (no training)"
    if not rounds:
        raise SystemExit(f"{path}: no FedAvg rounds and no base evaluation with answer NLL in results.json")
    return {"epsilon": doc["config"].get("dp_epsilon"), "rounds": rounds, "label": label}


def _label(eps: float | None) -> str:
    return "no DP" if eps is None else f"epsilon {eps:g}"


def table(runs: Sequence[dict[str, Any]]) -> str:
    """Markdown: per-site answer-text NLL [95% CI] and accuracy after the last round, per budget."""
    names = [s.name for s in SITES]
    head = "| run | " + " | ".join(f"{n} NLL" for n in names) + " | mean NLL | "
    head += " | ".join(f"{n} acc. %" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names))]
    for run in runs:
        last = run["rounds"][-1]
        cells = []
        for n in names:
            x = last["nll"][n]
            cells.append(f"{x['value']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]")
        mean = sum(last["nll"][n]["value"] for n in names) / len(names)
        accs = [f"{last['accuracy'][n]['value']:.1f}" for n in names]
        lines.append(
            f"| {run['label']} | " + " | ".join(cells) + f" | {mean:.3f} | " + " | ".join(accs) + " |"
        )
    return "\n".join(lines)


def plot(runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Per-site NLL after the last round by budget (bars, 95% CI), and mean NLL per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in SITES]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
    width = 0.8 / max(len(runs), 1)
    for j, run in enumerate(runs):
        last = run["rounds"][-1]["nll"]
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(names))]
        vals = [last[n]["value"] for n in names]
        err = [[v - last[n]["ci95"][0] for v, n in zip(vals, names, strict=True)],
               [last[n]["ci95"][1] - v for v, n in zip(vals, names, strict=True)]]  # fmt: skip
        ax1.bar(xs, vals, width, yerr=err, capsize=2, label=run["label"])
        rs = [r["round"] for r in run["rounds"]]
        means = [sum(r["nll"][n]["value"] for n in names) / len(names) for r in run["rounds"]]
        ax2.plot(rs, means, marker="o", label=run["label"])
    ax1.set_xticks(range(len(names)), ["MedQA-CN", "MedQA-EN", "MedMCQA-IN"])
    ax1.set_ylabel("answer-text NLL (nats/token), 95% CI; lower is better")
    ax1.set_title("FedAvg after the last round, by each site's DP budget")
    lo = min(r["rounds"][-1]["nll"][n]["ci95"][0] for r in runs for n in names)
    ax1.set_ylim(bottom=max(0.0, math.floor(lo * 10) / 10 - 0.2))
    ax1.legend(fontsize=8)
    ax2.set_xticks(sorted({r["round"] for run in runs for r in run["rounds"]}))
    ax2.set_xlabel("round")
    ax2.set_ylabel("mean answer-text NLL over the 3 test sets")
    ax2.set_title("per round")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; write the plot with --plot."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with results.json)")
    p.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    args = p.parse_args(argv)
    runs = [load_run(r) for r in args.runs]
    # base first, then no DP, then the budgets from the largest
    runs.sort(
        key=lambda r: (r["rounds"][0]["round"] != 0, -(math.inf if r["epsilon"] is None else r["epsilon"]))
    )
    print(table(runs))
    if args.plot:
        print(f"plot: {plot(runs, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
