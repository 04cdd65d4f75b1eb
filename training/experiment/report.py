"""results.json and results.md in the study's table shapes, with bootstrap 95% intervals."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.data import LETTERS
from training.experiment.config import SITES
from training.experiment.metrics import Estimate, paired_delta
from training.experiment.nll import NLL_AGGREGATES, nll_delta
from training.experiment.runner import Evaluation, RunState

SCHEMA = "medfed-experiment/1"

# The study's Qwen3-1.7B numbers (Tables 2 and 3), for side-by-side reading.
STUDY_QWEN3_1_7B: dict[str, Any] = {
    "accuracy": {
        "Base model": {"CN": 58.46, "EN": 41.01, "IN": 34.02},
        "LoRA (site IN only)": {"CN": 59.60, "EN": 40.06, "IN": 46.59},
        "LoRA (site CN only)": {"CN": 68.24, "EN": 44.93, "IN": 44.68},
        "LoRA (site EN only)": {"CN": 63.11, "EN": 48.39, "IN": 44.20},
    },
    "fairness": {
        "Base model": {"macro": 44.50, "min": 34.02, "hmean": 42.32},
        "Best single-site LoRA (CN)": {"macro": 52.44, "min": 44.68, "hmean": 50.45},
        "Federated LoRA (FedAvg)": {"macro": 53.56, "min": 46.40, "hmean": 52.03},
    },
}
AGG_LABELS = {"macro": "Macro-Acc", "min": "Min-Acc", "hmean": "H-mean"}


def _final(state: RunState, method: str) -> Evaluation | None:
    evs = [e for e in state.evaluations if e.method == method]
    return max(evs, key=lambda e: e.round or 0) if evs else None


def best_single(state: RunState) -> Evaluation | None:
    """The single-site LoRA with the highest Macro-Acc (the study's "best single")."""
    singles = [e for e in state.evaluations if e.method == "single" and e.scores is not None]
    return max(singles, key=lambda e: e.scores.macro.value if e.scores else 0.0) if singles else None


def best_single_nll(state: RunState) -> Evaluation | None:
    """The single-site LoRA with the lowest mean answer-text NLL over the test sets."""
    singles = [e for e in state.evaluations if e.method == "single" and e.nll_scores is not None]
    return min(singles, key=lambda e: e.nll_scores.mean.value if e.nll_scores else 0.0) if singles else None


def _base(state: RunState) -> Evaluation | None:
    return next((e for e in state.evaluations if e.method == "base"), None)


def nll_change_from_base(state: RunState, ev: Evaluation) -> dict[str, Estimate]:
    """``ev`` minus the base model, per site, worst and mean (paired; empty without a base NLL)."""
    base = _base(state)
    if base is None or not base.nll or not ev.nll or ev is base:
        return {}
    return nll_delta(ev.nll, base.nll, state.config.bootstrap, state.config.seed)


def nll_comparisons(state: RunState) -> dict[str, dict[str, Estimate]]:
    """Final federated minus the best single-site LoRA (by mean NLL), paired, nats per token."""
    best = best_single_nll(state)
    out: dict[str, dict[str, Estimate]] = {}
    if best is None:
        return out
    for m in ("fedavg", "exact"):
        ev = _final(state, m)
        if ev is not None and ev.nll:
            out[f"{m}_minus_best_single"] = nll_delta(
                ev.nll, best.nll, state.config.bootstrap, state.config.seed
            )
    return out


def headline(state: RunState) -> list[Evaluation]:
    """Rows of the accuracy table: base, each single-site LoRA, final fedavg, final exact."""
    rows: list[Evaluation] = [e for e in state.evaluations if e.method == "base"]
    rows += [e for e in state.evaluations if e.method == "single"]
    for m in ("fedavg", "exact"):
        ev = _final(state, m)
        if ev is not None:
            rows.append(ev)
    return rows


def comparisons(state: RunState) -> dict[str, dict[str, Estimate]]:
    """Final federated minus best single-site, paired bootstrap on the same test questions."""
    best = best_single(state)
    out: dict[str, dict[str, Estimate]] = {}
    if best is None:
        return out
    for m in ("fedavg", "exact"):
        ev = _final(state, m)
        if ev is not None and ev.correct:
            out[f"{m}_minus_best_single"] = paired_delta(
                ev.correct, best.correct, state.config.bootstrap, state.config.seed
            )
    return out


def letter_counts(indices: Any) -> dict[str, int]:
    """{letter: how often} over 0-based option indices."""
    counts: dict[str, int] = {}
    for i in indices:
        letter = LETTERS[int(i)]
        counts[letter] = counts.get(letter, 0) + 1
    return dict(sorted(counts.items()))


def _top(counts: dict[str, int]) -> str:
    if not counts:
        return "-"
    letter = max(counts, key=lambda k: (counts[k], -ord(k)))
    return f"{letter} {100.0 * counts[letter] / sum(counts.values()):.0f}%"


def _ev_dict(e: Evaluation, state: RunState | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": e.label,
        "method": e.method,
        "trained_on": e.site,
        "round": e.round,
        "eval_seconds": round(e.seconds, 2),
        **(e.scores.to_dict() if e.scores is not None else {}),
    }
    if e.nll_scores is not None:
        out["answer_nll"] = e.nll_scores.to_dict()
        if state is not None:
            change = nll_change_from_base(state, e)
            if change:
                out["answer_nll_change_from_base"] = {k: v.to_dict() for k, v in change.items()}
    if e.predictions:
        out["predicted_letters"] = {k: letter_counts(v) for k, v in e.predictions.items()}
    return out


def to_json(state: RunState, command: list[str] | None = None) -> dict[str, Any]:
    """The machine-readable result (schema ``medfed-experiment/1``)."""
    best = best_single(state)
    best_nll = best_single_nll(state)
    rows = headline(state)
    fairness_rows = [e for e in rows if e.method in ("base", "fedavg", "exact") and e.scores is not None]
    if best is not None:
        fairness_rows.insert(1 if fairness_rows and fairness_rows[0].method == "base" else 0, best)
    return {
        "schema": SCHEMA,
        "status": state.status,
        "command": command or [],
        "config": state.config.to_dict(),
        "machine": state.machine,
        "timing": {k: round(v, 2) for k, v in state.timing.items()},
        "data": {
            s.name: {
                "source": s.source,
                "train": len(s.train),
                "train_pool": s.train_pool,
                "test": len(s.test),
                "test_pool": s.test_pool,
                "test_excluded_for_stem_overlap": s.excluded_overlap,
                "train_answer_letters": letter_counts(q.answer for q in s.train),
                "test_answer_letters": letter_counts(q.answer for q in s.test),
            }
            for s in state.sites
        },
        "institutions": {
            inst.name: {"dataset": inst.site, "source": inst.source, "train": len(inst.train)}
            for s in state.sites
            for inst in s.institutions
        },
        "backend": state.backend,
        "leakage_check": state.leakage,
        "evaluations": [_ev_dict(e, state) for e in state.evaluations],
        "accuracy_table": [_ev_dict(e) for e in rows if e.scores is not None],
        "answer_nll_definition": NLL_DEFINITION,
        "answer_nll_table": [_ev_dict(e, state) for e in rows if e.nll_scores is not None],
        "best_single_nll": best_nll.site if best_nll else None,
        "nll_comparisons": {
            k: {m: v.to_dict() for m, v in d.items()} for k, d in nll_comparisons(state).items()
        },
        "fairness_table": [
            {**_ev_dict(e), "label": f"Best single-site LoRA ({e.site})" if e is best else e.label}
            for e in fairness_rows
        ],
        "best_single": best.site if best else None,
        "comparisons": {k: {m: v.to_dict() for m, v in d.items()} for k, d in comparisons(state).items()},
        "rounds": state.rounds,
        "study_reference_qwen3_1_7b": STUDY_QWEN3_1_7B,
        "deviations": state.deviations,
    }


NLL_DEFINITION = (
    "Mean negative log-likelihood (nats per token) of the correct answer's text (the option text) "
    "given the question without its options, in the chat format answer-text training uses; per "
    "question the mean over the answer's tokens, per test set the mean over its questions. Lower is "
    "better: 'worst' is the highest site's NLL (the analogue of Min-Acc), 'mean' the mean over the "
    "sites (Macro). 95% intervals by bootstrap over questions within each test set, paired between "
    "methods."
)


def _cell3(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.lo:.3f}, {e.hi:.3f}]"


def _delta3(e: Estimate) -> str:
    return f"{e.value:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]"


def nll_markdown(state: RunState) -> list[str]:
    """The answer-text NLL sections of results.md (empty when the run did not measure it)."""
    names = [s.name for s in SITES]
    rows = [e for e in headline(state) if e.nll_scores is not None]
    if not rows:
        return []
    lines = ["## Answer-text NLL per test set (nats per token, lower is better)", "", NLL_DEFINITION, ""]
    lines += [
        "| Model | " + " | ".join(names) + " | worst site | mean |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for e in rows:
        sc = e.nll_scores
        assert sc is not None
        cells = [_cell3(sc.per_site[n]) for n in names] + [_cell3(sc.worst), _cell3(sc.mean)]
        lines.append(f"| {e.label} | " + " | ".join(cells) + " |")
    lines.append("")
    changes = [(e, nll_change_from_base(state, e)) for e in rows]
    changes = [(e, c) for e, c in changes if c]
    if changes:
        lines += ["### Change from the base model (paired; negative: the method is better)", ""]
        lines += [
            "| Model | " + " | ".join(names) + " | worst site | mean |",
            "|---|" + "---|" * (len(names) + 2),
        ]
        for e, c in changes:
            lines.append(
                f"| {e.label} | " + " | ".join(_delta3(c[k]) for k in (*names, *NLL_AGGREGATES)) + " |"
            )
        lines.append("")
    comps = nll_comparisons(state)
    best = best_single_nll(state)
    if comps and best is not None:
        lines += [f"### Federated minus best single-site LoRA by mean NLL (site {best.site}), paired", ""]
        lines += [
            "| Comparison | " + " | ".join(names) + " | worst site | mean |",
            "|---|" + "---|" * (len(names) + 2),
        ]
        for key, d in comps.items():
            lines.append(
                f"| {key.split('_')[0]} - best single | "
                + " | ".join(_delta3(d[k]) for k in (*names, *NLL_AGGREGATES))
                + " |"
            )
        lines.append("")
    recs = [(m, r) for m, rs in state.rounds.items() for r in rs if r.get("nll")]
    if recs:
        lines += ["### Answer-text NLL per round of the federated runs", ""]
        lines += [
            "| Method | Round | " + " | ".join(names) + " | worst site | mean |",
            "|---|---|" + "---|" * (len(names) + 2),
        ]
        for m, r in recs:
            d = r["nll"]
            vals = [d["per_site"][n]["value"] for n in names] + [d["worst"]["value"], d["mean"]["value"]]
            lines.append(f"| {m} | {r['round']} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        lines.append("")
    return lines


def _cell(e: Estimate) -> str:
    return f"{e.value:.1f} [{e.lo:.1f}, {e.hi:.1f}]"


def _delta(e: Estimate) -> str:
    return f"{e.value:+.1f} [{e.lo:+.1f}, {e.hi:+.1f}]"


def to_markdown(state: RunState, command: list[str] | None = None) -> str:
    """The human-readable result: the study's two tables, the rounds, and every deviation."""
    cfg = state.config
    names = [s.name for s in SITES]
    best = best_single(state)
    lines: list[str] = ["# Non-IID study reproduction: results", ""]
    if state.status != "complete":
        lines += [
            f"**PARTIAL RESULTS** (run status: {state.status}, {state.stages_done}/{state.stages_total} "
            "stages done). Methods not listed below have not finished.",
            "",
        ]
    lines += [
        f"Model `{cfg.model}`, seed {cfg.seed}, {cfg.rounds} rounds x {cfg.local_epochs} local epoch, "
        f"lr {cfg.lr:g}, LoRA r{cfg.rank}/alpha {cfg.alpha}/dropout {cfg.dropout}. Accuracy in %, "
        f"[bootstrap 95% interval, {cfg.bootstrap} resamples].",
        "",
    ]
    if command:
        lines += ["Command: `" + " ".join(command) + "`", ""]

    lines += nll_markdown(state)
    acc_rows = [e for e in headline(state) if e.scores is not None]
    if not acc_rows:
        lines += ["(Letter accuracy was not measured in this run: `--metrics` left it out.)", ""]
    else:
        lines += _accuracy_markdown(state, acc_rows)

    comps = comparisons(state)
    if comps and best is not None:
        lines += [
            f"## Federated minus best single-site LoRA (site {best.site}), paired bootstrap",
            "",
            "Percentage points; an interval that contains 0 means no detectable difference.",
            "",
            "| Comparison | Macro-Acc | Min-Acc | H-mean |",
            "|---|---|---|---|",
        ]
        for key, d in comps.items():
            lines.append(
                f"| {key.split('_')[0]} - best single | "
                + " | ".join(_delta(d[m]) for m in AGG_LABELS)
                + " |"
            )
        lines.append("")

    if state.rounds:
        lines += ["## Per-round metrics of the federated runs", ""]
        lines += [
            "| Method | Round | " + " | ".join(names) + " | Macro-Acc | Min-Acc | H-mean | mean local loss |",
            "|---|---|" + "---|" * (len(names) + 4),
        ]
        for method, recs in state.rounds.items():
            for rec in recs:
                sc = rec["scores"]
                loss = sum(v["mean_loss"] for v in rec["local"].values()) / max(len(rec["local"]), 1)
                accs = [f"{sc['accuracy'][n]['value']:.1f}" if sc else "-" for n in names]
                aggs = [f"{sc[m]['value']:.1f}" if sc else "-" for m in AGG_LABELS]
                lines.append(f"| {method} | {rec['round']} | " + " | ".join(accs + aggs) + f" | {loss:.3f} |")
        lines.append("")

    with_preds = [e for e in state.evaluations if e.predictions]
    if with_preds:
        lines += [
            "## Most-predicted answer letter (share of test questions)",
            "",
            "A model that always answers one letter scores that letter's share of the test answers "
            "(last row), whatever it knows; a share near 100% means the model collapsed onto a letter.",
            "",
            "| Model | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for e in with_preds:
            lines.append(
                f"| {e.label} | " + " | ".join(_top(letter_counts(e.predictions[n])) for n in names) + " |"
            )
        tests = {s.name: letter_counts(q.answer for q in s.test) for s in state.sites}
        lines.append("| (test answers) | " + " | ".join(_top(tests.get(n, {})) for n in names) + " |")
        lines.append("")

    lines += ["## The study's numbers (Qwen3-1.7B), for reference", ""]
    lines += ["| Model | CN | EN | IN |", "|---|---|---|---|"]
    for label, acc in STUDY_QWEN3_1_7B["accuracy"].items():
        lines.append(f"| {label} | {acc['CN']:.2f} | {acc['EN']:.2f} | {acc['IN']:.2f} |")
    lines += ["", "| Model | Macro-Acc | Min-Acc | H-mean |", "|---|---|---|---|"]
    for label, f in STUDY_QWEN3_1_7B["fairness"].items():
        lines.append(f"| {label} | {f['macro']:.2f} | {f['min']:.2f} | {f['hmean']:.2f} |")
    lines.append("")

    lines += ["## Data", ""]
    lines += [
        "| Site | Source | Train (of pool) | Test (of pool) | Test rows excluded (stem in a train split) |"
    ]
    lines += ["|---|---|---|---|---|"]
    for s in state.sites:
        lines.append(
            f"| {s.name} | {s.source} | {len(s.train)} / {s.train_pool} | {len(s.test)} / {s.test_pool} "
            f"| {s.excluded_overlap} |"
        )
    insts = [i for s in state.sites for i in s.institutions]
    if len(insts) != len(state.sites):
        lines += ["", f"{len(insts)} simulated institutions (hash shards of each training split):", ""]
        lines += ["| Institution | Dataset | Train |", "|---|---|---|"]
        lines += [f"| {i.name} | {i.source} | {len(i.train)} |" for i in insts]
    if state.leakage:
        lines += ["", f"Leakage check passed: {state.leakage.get('checked', '')}."]
    lines.append("")

    lines += ["## Time and machine", ""]
    for k, v in state.timing.items():
        lines.append(f"- {k}: {v:.1f}")
    for k, v in state.machine.items():
        lines.append(f"- {k}: {v}")
    for k, v in state.backend.items():
        if k != "ray":
            lines.append(f"- backend {k}: {v:.1f}" if isinstance(v, float) else f"- backend {k}: {v}")
    lines.append("")

    lines += ["## Deviations from the study", ""]
    lines += [f"- {d}" for d in state.deviations]
    lines.append("")
    return "\n".join(lines)


def _accuracy_markdown(state: RunState, acc_rows: list[Evaluation]) -> list[str]:
    """The study's Table 2 and Table 3 shapes (letter accuracy)."""
    names = [s.name for s in SITES]
    lines = ["## Accuracy per test set (the study's Table 2 shape)", ""]
    lines += ["| Model | " + " | ".join(f"MedQA-{n}" if n != "IN" else "MedMCQA-IN" for n in names) + " |"]
    lines += ["|---|" + "---|" * len(names)]
    for e in acc_rows:
        sc = e.scores
        assert sc is not None
        lines.append(f"| {e.label} | " + " | ".join(_cell(sc.accuracy[n]) for n in names) + " |")
    lines.append("")
    lines += ["## Macro-Acc, Min-Acc, H-mean (the study's Table 3 shape)", ""]
    lines += ["| Model | Macro-Acc | Min-Acc | H-mean |", "|---|---|---|---|"]
    for row in to_json(state)["fairness_table"]:
        lines.append(
            f"| {row['label']} | "
            + " | ".join(
                _cell(Estimate(row[m]["value"], row[m]["ci95"][0], row[m]["ci95"][1])) for m in AGG_LABELS
            )
            + " |"
        )
    lines.append("")
    return lines


def write_reports(state: RunState, out_dir: str | os.PathLike[str], command: list[str] | None = None) -> None:
    """Write results.json, results.md, rounds.json and config.json into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_json(state, command)
    _write(out / "results.json", json.dumps(data, indent=2, sort_keys=False) + "\n")
    _write(out / "results.md", to_markdown(state, command))
    _write(out / "rounds.json", json.dumps(state.rounds, indent=2) + "\n")
    _write(
        out / "config.json",
        json.dumps({"command": command or [], "config": state.config.to_dict()}, indent=2) + "\n",
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
