"""Base models: the tiny test model and a smoke test of the default SmolLM2 gguf."""

from __future__ import annotations

import torch

from training.lora import LoraSettings, lora_targets
from training.models import build_tiny_model, load_base_model


def test_tiny_model_is_deterministic_and_has_all_projections() -> None:
    a, tok = build_tiny_model(seed=0)
    b, _ = build_tiny_model(seed=0)
    c, _ = build_tiny_model(seed=1)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    names = {n.rsplit(".", 1)[-1] for n in lora_targets(a, LoraSettings())}
    assert names == set(LoraSettings().target_modules)
    ids = tok.encode("Answer: A 答案", add_special_tokens=False)
    assert tok.decode(ids) == "Answer: A 答案"
    assert len(tok.encode("A", add_special_tokens=False)) == 1


def test_default_model_loads_and_gives_finite_logits() -> None:
    model, tok = load_base_model("default", device="cpu")
    assert load_base_model("default", device="cpu")[0] is model  # cached in-process
    ids = tok("The patient has a fever.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    assert tok.chat_template and len(lora_targets(model, LoraSettings())) == 30 * 7
    assert not any(p.requires_grad for p in model.parameters())
