"""Local LoRA training on the tiny model: real steps, loss goes down, determinism, base untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.adapter_io import AdapterSpec, read_adapter, validate_adapter, write_canonical_adapter
from training.errors import AdapterInvalid, TrainingError
from training.lora import LoraSettings, initial_adapter_state
from training.prompts import encode_example
from training.train import TrainConfig, answer_loss, attach_adapter, train_local


@pytest.fixture()
def start(tiny: Any, settings: LoraSettings, tmp_path: Path) -> Path:
    model, _ = tiny
    write_canonical_adapter(
        initial_adapter_state(model, settings, seed=0), settings, "medfed/tiny-llama", tmp_path / "g"
    )
    return tmp_path / "g"


def _batch_loss(model: Any, tok: Any, adapter: Path, settings: LoraSettings, questions: list[Any]) -> float:
    peft_model = attach_adapter(model, adapter, settings, trainable=False)
    try:
        peft_model.eval()
        with torch.no_grad():
            examples = [encode_example(q, tok, 256) for q in questions]
            loss, _ = answer_loss(peft_model, examples, tok.pad_token_id, torch.device("cpu"))
        return float(loss)
    finally:
        peft_model.unload()


def test_a_few_steps_lower_the_loss_and_leave_the_base_model_unchanged(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path, make_questions: Any
) -> None:
    model, tok = tiny
    questions = make_questions(8)
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = _batch_loss(model, tok, start, settings, questions)
    config = TrainConfig(lr=1e-2, batch_size=4, grad_accum=2, epochs=4, seed=1)
    result = train_local(model, tok, start, questions, settings, config, tmp_path / "out", progress=False)
    after = _batch_loss(model, tok, tmp_path / "out", settings, questions)
    assert after < before - 1.0
    assert result.steps == 4 and result.num_samples == 8 and len(result.losses) == 4
    assert result.tokens_per_s > 0 and np.isfinite(result.final_loss)
    validate_adapter(tmp_path / "out", AdapterSpec.from_model(model, settings), max_bytes=10**7)
    after_weights = model.state_dict()
    assert list(after_weights) == list(before_weights)
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights)
    assert not any("lora" in name for name, _ in model.named_modules())


def test_training_is_deterministic_and_seed_sensitive(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path, make_questions: Any
) -> None:
    model, tok = tiny
    questions = make_questions(6)
    config = TrainConfig(lr=5e-3, batch_size=2, grad_accum=1, max_steps=3, seed=3)
    a = train_local(model, tok, start, questions, settings, config, tmp_path / "a", progress=False)
    b = train_local(model, tok, start, questions, settings, config, tmp_path / "b", progress=False)
    c = train_local(
        model,
        tok,
        start,
        questions,
        settings,
        TrainConfig(**{**config.__dict__, "seed": 4}),
        tmp_path / "c",
        False,
    )
    assert a.sha256 == b.sha256 != c.sha256
    assert a.steps == 3
    a_state, start_state = read_adapter(tmp_path / "a"), read_adapter(start)
    assert any(not np.array_equal(a_state[k], start_state[k]) for k in a_state if "lora_B" in k)


def test_bad_start_adapter_and_empty_data_are_rejected(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path, make_questions: Any
) -> None:
    model, tok = tiny
    with pytest.raises(TrainingError, match="empty"):
        train_local(model, tok, start, [], settings, TrainConfig(), tmp_path / "x", progress=False)
    odd = LoraSettings(rank=3, alpha=6, dropout=0.0)
    write_canonical_adapter(initial_adapter_state(model, odd, 0), odd, "m", tmp_path / "odd")
    with pytest.raises(AdapterInvalid, match="rank 3"):
        train_local(
            model, tok, tmp_path / "odd", make_questions(2), settings, TrainConfig(), tmp_path / "y", False
        )
    assert not any("lora" in name for name, _ in model.named_modules())


def test_concurrent_train_and_evaluate_on_one_model_match_sequential_results(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path, make_questions: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from training.evaluate import evaluate

    model, tok = tiny
    questions = make_questions(8)
    config = TrainConfig(lr=1e-2, batch_size=2, grad_accum=1, max_steps=3, seed=5)
    solo_train = train_local(
        model, tok, start, questions, settings, config, tmp_path / "solo", progress=False
    )
    solo_eval = evaluate(model, tok, None, questions)
    with ThreadPoolExecutor(max_workers=3) as pool:
        trained = pool.submit(
            train_local, model, tok, start, questions, settings, config, tmp_path / "t", False
        )
        evals = [pool.submit(evaluate, model, tok, None, questions) for _ in range(2)]
        assert trained.result().sha256 == solo_train.sha256
        assert all(e.result() == solo_eval for e in evals)
