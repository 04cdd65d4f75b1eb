"""Deterministic aggregation: fedavg and exact."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.adapter_io import canonical_safetensors_bytes
from training.aggregation import STRATEGIES, AggregationInput, aggregate, merge_exact_delta
from training.errors import AggregationError
from training.lora import LoraSettings

KEY_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
KEY_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def _inputs(n: int, rank: int, d_in: int, d_out: int, seed: int) -> list[AggregationInput]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        state = {
            KEY_A: rng.normal(size=(rank, d_in)).astype(np.float32),
            KEY_B: rng.normal(size=(d_out, rank)).astype(np.float32),
        }
        out.append(AggregationInput(f"0x{i + 1:040X}", int(rng.integers(1, 1000)), state))
    return out


def _digest(state: dict[str, np.ndarray]) -> str:
    return hashlib.sha256(canonical_safetensors_bytes(state)).hexdigest()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_result_is_independent_of_input_order_and_address_case(name: str) -> None:
    inputs = _inputs(5, 3, 7, 6, seed=1)
    base = _digest(aggregate(name, inputs))
    assert _digest(aggregate(name, list(reversed(inputs)))) == base
    shuffled = [inputs[i] for i in (3, 0, 4, 1, 2)]
    lower = [AggregationInput(i.member.lower(), i.num_samples, i.state) for i in shuffled]
    assert _digest(aggregate(name, lower)) == base


def test_fedavg_of_identical_inputs_returns_the_input() -> None:
    one = _inputs(1, 4, 9, 5, seed=2)[0]
    copies = [AggregationInput(f"0x{i:040x}", n, one.state) for i, n in enumerate((3, 17, 1000))]
    out = aggregate("fedavg", copies)
    assert all(np.array_equal(out[k], one.state[k]) for k in one.state)
    assert all(out[k].dtype == np.float32 for k in out)


def test_fedavg_is_the_float64_weighted_average_cast_once() -> None:
    inputs = _inputs(4, 2, 5, 3, seed=3)
    total = sum(i.num_samples for i in inputs)
    ordered = sorted(inputs, key=lambda i: i.member.lower())
    for key in (KEY_A, KEY_B):
        acc = np.zeros_like(inputs[0].state[key], dtype=np.float64)
        for i in ordered:
            acc = acc + (i.num_samples / total) * i.state[key].astype(np.float64)
        assert np.array_equal(aggregate("fedavg", inputs)[key], acc.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    rank=st.integers(1, 6),
    d_in=st.integers(1, 12),
    d_out=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_delta_equals_weighted_average_of_products(
    n: int, rank: int, d_in: int, d_out: int, seed: int
) -> None:
    inputs = _inputs(n, rank, d_in, d_out, seed)
    out = aggregate("exact", inputs)
    assert out[KEY_A].shape == (n * rank, d_in) and out[KEY_B].shape == (d_out, n * rank)
    total = sum(i.num_samples for i in inputs)
    expected = sum(
        (i.num_samples / total) * (i.state[KEY_B].astype(np.float64) @ i.state[KEY_A].astype(np.float64))
        for i in inputs
    )
    got = out[KEY_B].astype(np.float64) @ out[KEY_A].astype(np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale * rank * n)


def test_inconsistent_inputs_are_rejected() -> None:
    a, b = _inputs(2, 2, 4, 4, seed=4)
    with pytest.raises(AggregationError, match="nothing to aggregate"):
        aggregate("fedavg", [])
    with pytest.raises(AggregationError, match="unknown aggregation strategy"):
        aggregate("median", [a])
    with pytest.raises(AggregationError, match="duplicate member"):
        aggregate("fedavg", [a, AggregationInput(a.member.lower(), 5, b.state)])
    with pytest.raises(AggregationError, match="different tensor names"):
        aggregate("fedavg", [a, AggregationInput(b.member, 5, {KEY_A: b.state[KEY_A]})])
    with pytest.raises(AggregationError, match="samples"):
        aggregate("fedavg", [a, AggregationInput(b.member, 0, b.state)])
    wrong_rank = {KEY_A: np.zeros((3, 4), np.float32), KEY_B: np.zeros((4, 3), np.float32)}
    for name in STRATEGIES:
        with pytest.raises(AggregationError, match="shape"):
            aggregate(name, [a, AggregationInput(b.member, 5, wrong_rank)])
    with pytest.raises(AggregationError, match="float32"):
        aggregate(
            "fedavg",
            [a, AggregationInput(b.member, 5, {k: v.astype(np.float64) for k, v in b.state.items()})],
        )


def test_merge_exact_delta_reproduces_the_adapted_model(tiny: Any, settings: LoraSettings) -> None:
    import torch
    from peft import set_peft_model_state_dict

    from training.lora import initial_adapter_state
    from training.models import build_tiny_model

    model, _ = tiny
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(3):
        state = initial_adapter_state(model, settings, seed=i)
        state = {
            k: v if "lora_A" in k else rng.normal(0, 0.05, v.shape).astype(np.float32)
            for k, v in state.items()
        }
        inputs.append(AggregationInput(f"0x{i:040x}", 10 * (i + 1), state))
    stacked = aggregate("exact", inputs)
    merged = merge_exact_delta(model, stacked, settings)
    assert merged is not model

    # The stacked adapter applied by peft (rank 3r, alpha 3*alpha) gives the same function.
    fresh, _ = build_tiny_model(seed=0)
    from peft import get_peft_model

    peft_model = get_peft_model(fresh, settings.stacked(3).to_peft_config(inference_mode=True))
    set_peft_model_state_dict(peft_model, {k: torch.from_numpy(v) for k, v in stacked.items()})
    ids = torch.tensor([[3, 50, 70, 90, 120]])
    with torch.no_grad():
        a = merged(ids).logits
        b = peft_model(ids).logits
        base = model(ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, base, atol=1e-3)
