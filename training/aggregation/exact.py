"""``exact``: stack the factors so that the adapter's delta is exactly sum_i w_i B_i A_i.

A = concat_i(A_i) along the rank axis (rank n*r), B = concat_i(w_i * B_i) along the rank axis, so
B @ A = sum_i w_i B_i A_i. The stacked adapter is written with ``r' = n*r`` and ``alpha' = n*alpha``
(see ``LoraSettings.stacked``) so peft's scaling ``alpha/r`` and hence the delta are unchanged.

Next round with ``exact``: each site merges the global delta into its copy of the base weights
(:func:`merge_exact_delta`) and trains a fresh rank-r LoRA from the seeded initial adapter
(``initial_adapter_state(model, settings, seed)``); its update is then again rank r.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.aggregation.base import AggregationInput, as_f32
from training.errors import AggregationError
from training.forward import model_lock
from training.lora import PEFT_PREFIX, LoraSettings


class Exact:
    """Rank-stacking aggregation whose delta equals the weighted average of the B_i A_i."""

    name = "exact"

    def __call__(self, inputs: Sequence[AggregationInput], weights: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in sorted(inputs[0].state):
            parts = [as_f32(i.state[key], i.member, key) for i in inputs]
            if len({p.shape for p in parts}) != 1:
                raise AggregationError(
                    f"tensor {key!r} has different shapes across members; ranks must match"
                )
            if key.endswith("lora_A.weight"):
                out[key] = np.concatenate(parts, axis=0)
            elif key.endswith("lora_B.weight"):
                rank = parts[0].shape[1]
                stacked = np.empty((parts[0].shape[0], rank * len(parts)), dtype=np.float32)
                tmp = np.empty(parts[0].shape, dtype=np.float64)
                for i, (x, w) in enumerate(zip(parts, weights, strict=True)):
                    np.copyto(tmp, x)  # exact upcast
                    np.multiply(tmp, w, out=tmp)
                    stacked[:, i * rank : (i + 1) * rank] = tmp  # the one cast to float32
                out[key] = stacked
            else:
                raise AggregationError(f"tensor {key!r} is neither lora_A nor lora_B; exact cannot stack it")
        return out


def merge_exact_delta(
    model: Any, state: Mapping[str, np.ndarray], settings: LoraSettings, in_place: bool = False
) -> Any:
    """Add ``scaling * B @ A`` of an adapter (any rank) into ``model``'s base weights.

    ``scaling`` is ``settings.alpha / settings.rank`` of the federation (an ``exact`` aggregate keeps
    it). Computed in float64 and cast to the weight's dtype. Returns a deep copy unless ``in_place``.
    """
    if in_place:
        target = model
    else:
        with model_lock(model):  # never copy a model while another thread has a LoRA attached
            target = copy.deepcopy(model)
    modules = dict(target.named_modules())
    scaling = settings.scaling
    for key_a in sorted(k for k in state if k.endswith("lora_A.weight")):
        name = key_a[len(PEFT_PREFIX) : -len(".lora_A.weight")]
        key_b = key_a.replace("lora_A.weight", "lora_B.weight")
        module = modules.get(name)
        if module is None or key_b not in state:
            raise AggregationError(f"adapter tensor {key_a!r} has no matching module or lora_B in the model")
        delta = np.asarray(state[key_b], dtype=np.float64) @ np.asarray(state[key_a], dtype=np.float64)
        weight = module.weight
        with torch.no_grad():
            merged = weight.detach().to("cpu", torch.float64) + torch.from_numpy(delta * scaling)
            weight.copy_(merged.to(weight.dtype))
    return target


def save_base_weights(model: Any, state: Mapping[str, np.ndarray], folder: Path) -> None:
    """Write into ``folder`` (one safetensors file per module) the weights that merging ``state``
    would change and that are not saved there yet, so that :func:`restore_base_weights` can undo
    every merge bit for bit. On disk, not in memory: the copy is needed only after a fallback."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    modules = dict(model.named_modules())
    for key_a in sorted(k for k in state if k.endswith("lora_A.weight")):
        name = key_a[len(PEFT_PREFIX) : -len(".lora_A.weight")]
        module = modules.get(name)
        path = folder / f"{name}.safetensors"
        if module is not None and not path.exists():
            tmp = folder / f"{name}.tmp"
            save_file({"weight": module.weight.detach().to("cpu").contiguous()}, str(tmp))
            os.replace(tmp, path)


def restore_base_weights(model: Any, folder: Path) -> None:
    """Put back the weights :func:`save_base_weights` saved in ``folder``: the model is then the
    unmerged base again, byte for byte, and merging a history anew gives what a freshly loaded
    model gives."""
    from safetensors.torch import load_file

    modules = dict(model.named_modules())
    with torch.no_grad():
        for path in sorted(folder.glob("*.safetensors")):
            weight = modules[path.name[: -len(".safetensors")]].weight
            weight.copy_(load_file(str(path))["weight"].to(weight.device))
