"""The task layer both backends share: the exact-merge chain gives the same bits by any path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.experiment.tasks import Merge, ModelHolder, read_adapter_files, write_adapter_files
from training.lora import LoraSettings, initial_adapter_state


def _merge(holder: ModelHolder, key: str, seed: int, settings: LoraSettings) -> Merge:
    state = initial_adapter_state(holder.model, settings, seed)
    # initial B is zero: give it values so that the merge changes the weights
    rng = np.random.default_rng(seed)
    state = {
        k: (rng.standard_normal(v.shape).astype(np.float32) if "lora_B" in k else v) for k, v in state.items()
    }
    return Merge(key, state, settings)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_merge_chain_is_bit_identical_by_any_path_and_leaves_the_base_alone() -> None:
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0)
    a = ModelHolder("tiny", "cpu")
    a.load()
    base = _weights(a.model)
    m1, m2 = _merge(a, "r1", 1, settings), _merge(a, "r2", 2, settings)

    first = _weights(a.model_for([m1]))
    assert any(not torch.equal(first[k], base[k]) for k in base)
    extended = _weights(a.model_for([m1, m2]))  # adds m2 in place to the cached chain
    assert a.model_for([m1, m2]) is a.model_for([m1, m2])  # cached

    b = ModelHolder("tiny", "cpu")  # a fresh worker: rebuilds [m1, m2] from its own base
    rebuilt = _weights(b.model_for([m1, m2]))
    assert extended.keys() == rebuilt.keys()
    assert all(torch.equal(extended[k], rebuilt[k]) for k in extended)
    assert all(torch.equal(v, base[k]) for k, v in _weights(a.model_for([])).items())
    assert a.loads == 1 and b.loads == 1


def test_adapter_files_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"\x00\x01weights")
    (src / "adapter_config.json").write_text("{}")
    files = read_adapter_files(src)
    out = write_adapter_files(files, tmp_path / "b")
    assert read_adapter_files(out) == files and sorted(files) == sorted(p.name for p in src.iterdir())
