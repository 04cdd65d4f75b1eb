"""Letter log-likelihood evaluation against a hand computation, and the fairness metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.adapter_io import write_canonical_adapter
from training.errors import TrainingError
from training.evaluate import evaluate, fairness, letter_scores
from training.lora import LoraSettings, initial_adapter_state
from training.prompts import letter_ids, prompt_ids
from training.train import attach_adapter


def test_evaluation_agrees_with_a_hand_computed_forward_pass(tiny: Any, make_questions: Any) -> None:
    model, tok = tiny
    questions = make_questions(7)
    letters = letter_ids(tok, 4)
    expected = []
    with torch.no_grad():
        for q in questions:
            ids = torch.tensor([prompt_ids(q, tok)])
            logp = torch.log_softmax(model(ids).logits[0, -1].double(), dim=-1)
            expected.append([float(logp[t]) for t in letters])
    scores = letter_scores(model, tok, questions, batch_size=3)
    assert np.allclose(scores, np.array(expected), atol=1e-4)
    result = evaluate(model, tok, None, questions, batch_size=3)
    hand = [int(np.argmax(row)) for row in expected]
    assert list(result.predictions) == hand
    assert result.correct == sum(h == q.answer for h, q in zip(hand, questions, strict=True))
    assert result.accuracy == pytest.approx(result.correct / 7) and result.n == 7
    assert result.per_item == [h == q.answer for h, q in zip(hand, questions, strict=True)]
    assert evaluate(model, tok, None, questions, batch_size=1) == result


def test_evaluation_with_adapter_differs_and_leaves_base_clean(
    tiny: Any, settings: LoraSettings, tmp_path: Path, make_questions: Any
) -> None:
    model, tok = tiny
    rng = np.random.default_rng(0)
    state = initial_adapter_state(model, settings, seed=0)
    state = {
        k: v if "lora_A" in k else rng.normal(0, 0.5, v.shape).astype(np.float32) for k, v in state.items()
    }
    write_canonical_adapter(state, settings, "m", tmp_path)
    questions = make_questions(8, language="zh")
    plain = letter_scores(model, tok, questions)
    with_adapter = evaluate(model, tok, tmp_path, questions)
    assert not any("lora" in name for name, _ in model.named_modules())
    assert np.array_equal(letter_scores(model, tok, questions), plain)
    assert evaluate(model, tok, tmp_path, questions) == with_adapter
    attached = attach_adapter(model, tmp_path, settings, trainable=False)
    try:
        adapted = letter_scores(attached, tok, questions)
    finally:
        attached.unload()
    assert not np.allclose(adapted, plain, atol=1e-3)
    assert list(with_adapter.predictions) == [int(np.argmax(row)) for row in adapted]


def test_fairness_metrics_and_bootstrap_intervals() -> None:
    acc = {"a": 0.5, "b": 0.25, "c": 1.0}
    f = fairness(acc)
    assert f.macro == pytest.approx(1.75 / 3) and f.min == 0.25
    assert f.hmean == pytest.approx(3 / (2 + 4 + 1)) and f.macro_ci is None
    assert fairness({"a": 0.0, "b": 1.0}).hmean == 0.0
    rng = np.random.default_rng(1)
    items = {k: list(rng.random(400) < v) for k, v in {"a": 0.6, "b": 0.3}.items()}
    measured = {k: float(np.mean(v)) for k, v in items.items()}
    g = fairness(measured, items, n_boot=500, seed=0)
    for value, ci in [(g.macro, g.macro_ci), (g.min, g.min_ci), (g.hmean, g.hmean_ci)]:
        assert ci is not None and ci[0] < value < ci[1] and ci[1] - ci[0] < 0.15
    lo, hi = g.per_dataset_ci["a"]
    assert lo < measured["a"] < hi and 0.05 < hi - lo < 0.15
    assert fairness(measured, items, n_boot=500, seed=0) == g
    with pytest.raises(TrainingError, match="lacks"):
        fairness(measured, {"a": items["a"]})
