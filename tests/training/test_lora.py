"""LoRA settings hash and the seeded initial adapter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.errors import TrainingError
from training.lora import LoraSettings, initial_adapter_state, lora_targets


def test_config_hash_is_stable_and_sensitive() -> None:
    a = LoraSettings()
    assert a.config_hash() == LoraSettings(target_modules=tuple(reversed(a.target_modules))).config_hash()
    assert a.config_hash() != LoraSettings(rank=8).config_hash()
    assert len(bytes.fromhex(a.config_hash())) == 32
    assert a.to_peft_config().r == 16 and a.to_peft_config().lora_alpha == 32
    assert a.stacked(3).scaling == a.scaling
    with pytest.raises(TrainingError):
        LoraSettings(rank=0)


def test_initial_adapter_is_seeded_with_zero_b(tiny: Any, settings: LoraSettings) -> None:
    model, _ = tiny
    state = initial_adapter_state(model, settings, seed=5)
    assert len(state) == 2 * len(lora_targets(model, settings)) == 2 * 7 * 2
    for key, value in state.items():
        assert value.dtype == np.float32
        if "lora_B" in key:
            assert not value.any()
        else:
            assert value.shape[0] == settings.rank and value.std() > 0
            assert np.abs(value).max() <= 1 / np.sqrt(value.shape[1])
    again = initial_adapter_state(model, settings, seed=5)
    other = initial_adapter_state(model, settings, seed=6)
    assert all(np.array_equal(state[k], again[k]) for k in state)
    assert any(not np.array_equal(state[k], other[k]) for k in state if "lora_A" in k)
