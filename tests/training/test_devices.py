"""Base-model dtype, device, 4-bit and gradient checkpointing options. What runs on the CPU is tested
here for real; what needs a GPU is named so (skipped with reason "needs CUDA" on a CPU machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.adapter_io import AdapterSpec, read_adapter, validate_adapter, write_canonical_adapter
from training.aggregation import AggregationInput, aggregate
from training.data import Conversation
from training.errors import ModelError
from training.evaluate import evaluate, evaluate_sft
from training.lora import LoraSettings, initial_adapter_state
from training.models import build_tiny_model, load_base_model, pick_dtype
from training.train import TrainConfig, train_local

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def _start(model: Any, settings: LoraSettings, out: Path) -> Path:
    write_canonical_adapter(
        initial_adapter_state(model, settings, seed=0), settings, "medfed/tiny-llama", out
    )
    return out


def _convs(n: int) -> list[Conversation]:
    return [
        Conversation(f"c/{i}", "c", (("user", f"Case {i}?"), ("assistant", "Rest and fluids.")))
        for i in range(n)
    ]


def test_dtype_defaults_and_clear_errors_without_a_gpu() -> None:
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype 'int3'"):
        pick_dtype("int3", "cpu")
    with pytest.raises(ModelError, match="load_in_4bit needs a pretrained model"):
        load_base_model("tiny", "cpu", load_in_4bit=True)
    if not CUDA:
        with pytest.raises(ModelError, match=r"torch sees no CUDA GPU.*device = \"cpu\""):
            load_base_model("tiny", "cuda")
        from training.models import quantization_4bit

        with pytest.raises(ModelError, match="load_in_4bit needs a CUDA GPU"):
            quantization_4bit("cpu", torch.bfloat16)


def test_bfloat16_base_trains_float32_adapters_and_aggregation_stays_bit_exact(
    tmp_path: Path, settings: LoraSettings
) -> None:
    """Adapters are float32 files whatever the base dtype, and FedAvg over them is the plain numpy
    float64 sum cast once: the result depends on the files only, never on the training device."""
    fp32, tok = load_base_model("tiny", "cpu", "float32")
    bf16, _ = load_base_model("tiny", "cpu", "bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    start = _start(fp32, settings, tmp_path / "g")
    cfg = TrainConfig(lr=1e-2, batch_size=2, grad_accum=1, max_steps=2, seed=0)
    train_local(fp32, tok, start, _convs(4), settings, cfg, tmp_path / "a", progress=False)
    train_local(bf16, tok, start, _convs(4), settings, cfg, tmp_path / "b", progress=False)
    spec = AdapterSpec.from_model(fp32, settings)
    for d in ("a", "b"):
        validate_adapter(tmp_path / d, spec, max_bytes=10**7)
        assert all(v.dtype == np.float32 for v in read_adapter(tmp_path / d).values())
    inputs = [
        AggregationInput(m, n, read_adapter(tmp_path / d)) for m, n, d in (("0x1", 3, "a"), ("0x2", 5, "b"))
    ]
    out = aggregate("fedavg", inputs)
    for key, value in out.items():
        ref = (3 * inputs[0].state[key].astype(np.float64) + 5 * inputs[1].state[key].astype(np.float64)) / 8
        assert np.array_equal(value, ref.astype(np.float32))
    assert evaluate_sft(bf16, tok, tmp_path / "b", _convs(2)).loss > 0


def test_gradient_checkpointing_gives_the_same_training(tmp_path: Path, settings: LoraSettings) -> None:
    model, tok = build_tiny_model()
    start = _start(model, settings, tmp_path / "g")
    base = TrainConfig(lr=1e-2, batch_size=2, grad_accum=1, max_steps=3, seed=0)
    plain = train_local(model, tok, start, _convs(6), settings, base, tmp_path / "p", progress=False)
    ckpt_cfg = TrainConfig(**{**base.__dict__, "gradient_checkpointing": True})
    ckpt = train_local(model, tok, start, _convs(6), settings, ckpt_cfg, tmp_path / "c", progress=False)
    assert np.allclose(plain.losses, ckpt.losses, rtol=1e-5, atol=1e-6)
    flag = (
        "is_activation_checkpointing"
        if hasattr(model, "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    assert not getattr(model, flag)  # switched off again for the next job


@needs_cuda
def test_training_and_evaluation_on_cuda_in_bfloat16(
    tmp_path: Path, settings: LoraSettings, make_questions: Any
) -> None:
    model, tok = load_base_model("tiny", "cuda")
    assert next(model.parameters()).dtype == torch.bfloat16 and next(model.parameters()).is_cuda
    start = _start(model, settings, tmp_path / "g")
    before = evaluate_sft(model, tok, start, _convs(4)).loss
    cfg = TrainConfig(lr=1e-2, batch_size=4, grad_accum=1, epochs=3, seed=0, gradient_checkpointing=True)
    result = train_local(model, tok, start, _convs(8), settings, cfg, tmp_path / "out", progress=False)
    assert all(v.dtype == np.float32 for v in read_adapter(tmp_path / "out").values())
    assert evaluate_sft(model, tok, tmp_path / "out", _convs(4)).loss < before
    assert 0 <= evaluate(model, tok, tmp_path / "out", make_questions(8)).accuracy <= 1
    print(f"\nCUDA tiny: {result.tokens_per_s:.0f} tokens/s, held-out loss {before:.3f} -> trained")


@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs CUDA and bitsandbytes")
def test_qlora_4bit_base_on_cuda(tmp_path: Path, settings: LoraSettings) -> None:
    fp, tok = build_tiny_model()
    fp.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, tok = load_base_model(str(tmp_path / "m"), "cuda", load_in_4bit=True)
    assert model.is_loaded_in_4bit
    start = _start(fp, settings, tmp_path / "g")
    cfg = TrainConfig(lr=1e-2, batch_size=4, max_steps=2, seed=0)
    train_local(model, tok, start, _convs(8), settings, cfg, tmp_path / "out", progress=False)
    validate_adapter(tmp_path / "out", AdapterSpec.from_model(fp, settings), max_bytes=10**7)
