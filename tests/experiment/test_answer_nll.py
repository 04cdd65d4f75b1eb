"""Answer-text NLL: a hand computation on the tiny model, its statistics, and test rows only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import Question
from training.evaluate import answer_nll
from training.experiment import scoring
from training.experiment.cli import main
from training.experiment.nll import nll_delta, nll_scores
from training.models import build_tiny_model
from training.prompts import IGNORE_INDEX, encode_answer_text

SITES = ("CN", "EN", "IN")
KNOWN = Question(
    id="q1",
    source="medqa-us",
    language="en",
    question="Which vitamin deficiency causes scurvy?",
    options=("Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"),
    answer=1,
)


def _hand_nll(model: torch.nn.Module, ids: list[int], labels: list[int]) -> float:
    """Mean -log softmax(logits)[label] over the labelled tokens, the softmax done by hand."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    total, count = 0.0, 0
    for j, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        row = logits[j - 1]  # position j-1 predicts token j
        top = max(row)
        log_z = top + math.log(sum(math.exp(x - top) for x in row))
        total += log_z - row[label]
        count += 1
    return total / count


def test_answer_nll_of_the_tiny_model_equals_a_hand_computation() -> None:
    model, tok = build_tiny_model(seed=3)
    model.eval()
    ex = encode_answer_text(KNOWN, tok, 256)
    answer = [t for t in ex.labels if t != IGNORE_INDEX]
    # the labelled tokens are exactly the correct option's text, at the end of the example
    assert answer == list(tok("Vitamin C", add_special_tokens=False)["input_ids"])
    assert list(ex.input_ids[-len(answer) :]) == answer
    assert "Vitamin A" not in tok.decode(list(ex.input_ids))  # the options are not shown

    expected = _hand_nll(model, list(ex.input_ids), list(ex.labels))
    other = encode_answer_text(KNOWN, tok, 256, option=3)
    expected_other = _hand_nll(model, list(other.input_ids), list(other.labels))
    got = answer_nll(model, tok, None, [KNOWN, KNOWN], options=[1, 3], batch_size=2)
    assert got[0] == pytest.approx(expected, abs=1e-5)
    assert got[1] == pytest.approx(expected_other, abs=1e-5)
    assert expected > 0 and expected != pytest.approx(expected_other, abs=1e-3)
    # the default option is the correct one; batching does not change a value
    assert answer_nll(model, tok, None, [KNOWN], batch_size=1)[0] == pytest.approx(expected, abs=1e-5)


def test_nll_scores_worst_mean_and_paired_delta() -> None:
    a = {"CN": np.array([1.0, 2.0, 3.0]), "EN": np.array([4.0, 4.0]), "IN": np.array([0.5, 1.5])}
    sc = nll_scores(a, n_boot=200, seed=0)
    assert [sc.per_site[k].value for k in SITES] == [2.0, 4.0, 1.0]
    assert sc.worst.value == 4.0 and sc.mean.value == pytest.approx(7.0 / 3)
    assert sc.per_site["EN"].lo == sc.per_site["EN"].hi == 4.0  # no spread, no interval
    for est in (*sc.per_site.values(), sc.mean):
        assert est.lo <= est.value <= est.hi
    b = {k: v + 0.25 for k, v in a.items()}
    d = nll_delta(a, b, n_boot=200, seed=0)
    # a shift of every question is recovered exactly by the paired bootstrap
    for key in (*SITES, "worst", "mean"):
        assert d[key].value == pytest.approx(-0.25) and d[key].lo == pytest.approx(-0.25)
        assert d[key].hi == pytest.approx(-0.25)
    with pytest.raises(ValueError):
        nll_delta(a, {"CN": a["CN"], "EN": a["EN"], "IN": a["IN"][:1]})


def test_quick_run_writes_answer_nll_for_every_method(quick_run: Path) -> None:
    data = json.loads((quick_run / "results.json").read_text())
    assert data["config"]["metrics"] == ["accuracy", "nll"]
    labels = {row["label"] for row in data["answer_nll_table"]}
    assert {"Base model", *(f"LoRA (site {s} only)" for s in SITES)} <= labels
    assert any(x.startswith("FedAvg round") for x in labels) and any(
        x.startswith("Exact round") for x in labels
    )
    for row in data["evaluations"]:
        block = row["answer_nll"]
        values = [block["per_site"][s]["value"] for s in SITES]
        assert all(v > 0 for v in values)
        assert block["worst"]["value"] == pytest.approx(max(values), abs=1e-3)
        assert block["mean"]["value"] == pytest.approx(sum(values) / 3, abs=1e-3)
        assert block["n"] == {s: data["data"][s]["test"] for s in SITES}
        if row["method"] != "base":
            assert set(row["answer_nll_change_from_base"]) == {*SITES, "worst", "mean"}
    assert data["best_single_nll"] in SITES
    assert set(data["nll_comparisons"]) == {"fedavg_minus_best_single", "exact_minus_best_single"}
    for recs in data["rounds"].values():
        assert all(set(r["nll"]["per_site"]) == set(SITES) for r in recs)
    md = (quick_run / "results.md").read_text()
    assert "Answer-text NLL per test set" in md and "Change from the base model" in md
    assert (quick_run / "results_nll.png").read_bytes().startswith(b"\x89PNG")


def test_nll_is_computed_only_on_test_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[str] = []
    real = scoring.answer_nll

    def spy(model, tokenizer, adapter, questions, **kw):  # type: ignore[no-untyped-def]
        scored.extend(q.id for q in questions)
        return real(model, tokenizer, adapter, questions, **kw)

    monkeypatch.setattr(scoring, "answer_nll", spy)
    out = tmp_path / "run"
    args = ["--quick", "--out", str(out), "--no-progress", "--threads", "1", "--target", "text"]
    assert main([*args, "--metrics", "nll", "--methods", "base,single"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["target"] == "text" and data["accuracy_table"] == []
    from training.experiment.config import quick_config
    from training.experiment.dataset import select

    sites = select(quick_config())
    test_ids = {q.id for s in sites for q in s.test}
    train_ids = {q.id for s in sites for q in s.train}
    assert scored and set(scored) == test_ids and not set(scored) & train_ids
    # base + 3 single-site models, each over every test question once
    assert len(scored) == 4 * len(test_ids)
