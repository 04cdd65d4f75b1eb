"""The federation's LoRA settings and its seeded starting adapter."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from training.errors import TrainingError

PEFT_PREFIX = "base_model.model."
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters fixed per federation (study: all 7 projections, dropout 0.1; r16, alpha 32)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0 or not self.target_modules:
            raise TrainingError(f"invalid LoRA settings {self}; need rank >= 1, alpha > 0, 0 <= dropout < 1")

    @property
    def scaling(self) -> float:
        """The factor peft multiplies ``B @ A`` by: ``alpha / rank``."""
        return float(self.alpha) / self.rank

    def canonical(self) -> dict[str, Any]:
        """The settings as a plain dict with sorted target modules (what the hash covers)."""
        return {
            "alpha": int(self.alpha),
            "dropout": float(self.dropout),
            "rank": int(self.rank),
            "target_modules": sorted(self.target_modules),
        }

    def config_hash(self) -> str:
        """sha256 hex of the canonical JSON of :meth:`canonical` (the on-chain ``loraConfigHash``)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def stacked(self, n: int) -> LoraSettings:
        """Settings of an ``exact`` aggregate of ``n`` adapters: rank and alpha times n, same scaling."""
        return replace(self, rank=self.rank * n, alpha=self.alpha * n)

    def to_peft_config(self, inference_mode: bool = False) -> Any:
        """A ``peft.LoraConfig`` for a causal LM with these settings."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=sorted(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
            inference_mode=inference_mode,
        )


def lora_targets(model: Any, settings: LoraSettings) -> dict[str, tuple[int, int]]:
    """{module name: (out_features, in_features)} for every linear layer LoRA wraps, sorted by name."""
    targets: dict[str, tuple[int, int]] = {}
    wanted = set(settings.target_modules)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in wanted and hasattr(module, "in_features"):
            base = getattr(module, "base_layer", module)  # already wrapped by peft
            targets[name] = (int(base.out_features), int(base.in_features))
    if not targets:
        raise TrainingError(f"model has no modules named {sorted(wanted)}; choose target_modules it has")
    return dict(sorted(targets.items()))


def adapter_keys(module_name: str) -> tuple[str, str]:
    """The peft state-dict keys (A, B) of one wrapped module."""
    base = PEFT_PREFIX + module_name
    return f"{base}.lora_A.weight", f"{base}.lora_B.weight"


def initial_adapter_state(model: Any, settings: LoraSettings, seed: int) -> dict[str, np.ndarray]:
    """The federation's starting adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) from ``seed`` (peft's
    kaiming-uniform bound), B = 0, float32. Uses numpy's PCG64 so any machine gets the same bytes.
    Does not modify ``model``."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for name, (out_f, in_f) in lora_targets(model, settings).items():
        key_a, key_b = adapter_keys(name)
        bound = 1.0 / math.sqrt(in_f)
        state[key_a] = rng.uniform(-bound, bound, size=(settings.rank, in_f)).astype(np.float32)
        state[key_b] = np.zeros((out_f, settings.rank), dtype=np.float32)
    return state
