"""Supervised fine-tuning on chat data with the tiny model: real steps lower the held-out loss on the
replies, evaluation is deterministic, and the correct-option NLL of multiple choice is reported."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from training.adapter_io import write_canonical_adapter
from training.data import Conversation
from training.evaluate import evaluate, evaluate_sft
from training.lora import LoraSettings, initial_adapter_state
from training.train import TrainConfig, train_local


def _convs(ids: range) -> list[Conversation]:
    """Replies follow a pattern the model can learn (the reply repeats a fixed phrase)."""
    return [
        Conversation(f"c/{i}", "c", (("user", f"Patient {i}: advice?"), ("assistant", "Rest and fluids.")))
        for i in ids
    ]


@pytest.fixture()
def start(tiny: Any, settings: LoraSettings, tmp_path: Path) -> Path:
    model, _ = tiny
    write_canonical_adapter(
        initial_adapter_state(model, settings, seed=0), settings, "medfed/tiny-llama", tmp_path / "g"
    )
    return tmp_path / "g"


def test_sft_training_lowers_the_held_out_loss_on_replies(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path
) -> None:
    model, tok = tiny
    train, held = _convs(range(8)), _convs(range(100, 104))
    before = evaluate_sft(model, tok, start, held)
    assert before.n == 4 and before.tokens == 4 * len(
        tok("Rest and fluids.</s>\n", add_special_tokens=False)["input_ids"]
    )
    assert before.perplexity == pytest.approx(math.exp(before.loss))
    config = TrainConfig(lr=1e-2, batch_size=4, grad_accum=1, epochs=3, seed=0)
    result = train_local(model, tok, start, train, settings, config, tmp_path / "out", progress=False)
    assert result.steps == 6 and result.tokens_per_s > 0
    after = evaluate_sft(model, tok, tmp_path / "out", held)
    assert after.loss < before.loss - 0.5
    assert evaluate_sft(model, tok, tmp_path / "out", held, batch_size=1).loss == pytest.approx(
        after.loss, abs=1e-6
    )


def test_multiple_choice_reports_the_correct_options_nll(tiny: Any, start: Path, make_questions: Any) -> None:
    model, tok = tiny
    result = evaluate(model, tok, start, make_questions(6))
    assert 0 < result.nll < 20 and math.isfinite(result.nll)


def test_the_default_models_own_chat_template_trains_on_the_replies_only() -> None:
    """SmolLM2-Instruct's real template (with its default system turn) renders turn by turn."""
    import os

    from transformers import AutoTokenizer

    from training.models import DEFAULT_GGUF, smollm2_dir
    from training.prompts import IGNORE_INDEX, encode_conversation

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=DEFAULT_GGUF)
    c = Conversation(
        "x/1",
        "x",
        (
            ("user", "Dose for a child?"),
            ("assistant", "Ask a pharmacist."),
            ("user", "Adults?"),
            ("assistant", "Two."),
        ),
    )
    ex = encode_conversation(c, tok, 512)
    trained = tok.decode(
        [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert trained == "Ask a pharmacist.<|im_end|>\nTwo.<|im_end|>\n"
    assert "<|im_start|>system" in tok.decode(list(ex.input_ids))
