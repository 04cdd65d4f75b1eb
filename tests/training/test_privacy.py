"""DP-SGD at a site: the accountant against published figures, per-sample clipping, noise, budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.adapter_io import read_adapter, write_canonical_adapter
from training.errors import TrainingError
from training.lora import LoraSettings, initial_adapter_state
from training.privacy import (
    DpConfig,
    default_delta,
    epsilon_mironov,
    epsilon_spent,
    noise_for_budget,
    sample_rate,
)
from training.prompts import encode_example
from training.train import TrainConfig, attach_adapter, example_losses, train_local

# TF Privacy, tutorials/README.md ("Select Parameters"; github.com/tensorflow/privacy): the MNIST
# tutorial, N = 60000, batch 256, delta = 1e-5: (noise multiplier, epochs) -> published epsilon.
PUBLISHED = [(1.1, 60, 3.01), (1.3, 15, 1.19), (0.7, 45, 7.10)]


@pytest.mark.parametrize(("noise", "epochs", "published"), PUBLISHED)
def test_the_accountant_reproduces_tf_privacys_published_epsilons(
    noise: float, epochs: int, published: float
) -> None:
    history = [(noise, 256 / 60000, math.ceil(epochs * 60000 / 256))]
    assert epsilon_mironov(history, 1e-5) == pytest.approx(published, abs=0.01)
    # what a node reports: Opacus's tighter conversion of the same RDP curve, never looser
    assert 0.75 * published < epsilon_spent(history, 1e-5) <= published


def test_noise_for_a_budget_spends_at_most_the_budget_and_more_rounds_need_more_noise() -> None:
    q = sample_rate(8, 400)
    sigma = noise_for_budget(3.0, 1e-4, q, total_steps=5 * 50)
    assert epsilon_spent([(sigma, q, 250)], 1e-4) <= 3.0
    assert epsilon_spent([(sigma * 0.9, q, 250)], 1e-4) > 3.0 - 0.02
    assert noise_for_budget(3.0, 1e-4, q, total_steps=10 * 50) > sigma
    # a history in several rounds adds up like one run of the same steps
    assert epsilon_spent([(sigma, q, 50)] * 5, 1e-4) == pytest.approx(epsilon_spent([(sigma, q, 250)], 1e-4))
    assert default_delta(400) == 1e-4 and default_delta(1000) == 1e-4 and default_delta(1001) == 1e-5
    with pytest.raises(TrainingError, match="invalid privacy budget"):
        noise_for_budget(0.0, 1e-5, q, 10)


@pytest.fixture()
def start(tiny: Any, settings: LoraSettings, tmp_path: Path) -> Path:
    model, _ = tiny
    write_canonical_adapter(
        initial_adapter_state(model, settings, seed=0), settings, "medfed/tiny-llama", tmp_path / "g"
    )
    return tmp_path / "g"


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # frozen inputs: as meant
def test_per_sample_gradients_are_clipped_before_noise(
    tiny: Any, settings: LoraSettings, start: Path, make_questions: Any
) -> None:
    """Opacus's per-example gradients of the LoRA parameters equal each example's own gradient,
    and after clipping each is at most C (the sum the noise is added to is a sum of these)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model, tok = tiny
    examples = [encode_example(q, tok, 256) for q in make_questions(4)]
    peft_model = attach_adapter(model, start, settings, trainable=True)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        assert params and all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
        gsm = GradSampleModule(peft_model, batch_first=True, loss_reduction="mean", strict=False)
        per, _ = example_losses(peft_model, examples, tok.pad_token_id, torch.device("cpu"))
        per.mean().backward()
        samples = [p.grad_sample.detach().clone() for p in params]  # type: ignore[attr-defined]
        norms = torch.stack([s.reshape(len(examples), -1).norm(dim=1) for s in samples], 1).norm(dim=1)
        c = float(norms.min()) / 2  # every example is clipped
        opt = DPOptimizer(
            torch.optim.SGD(params, lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=c,
            expected_batch_size=len(examples),
        )
        opt.signal_skip_step(do_skip=True)
        opt.step()  # clip and sum only
        summed = torch.cat([p.summed_grad.reshape(-1) for p in params])  # type: ignore[attr-defined]
        clipped = [s * (c / norms).reshape(-1, *([1] * (s.dim() - 1))) for s in samples]
        per_clipped = torch.stack([x.reshape(len(examples), -1).norm(dim=1) for x in clipped], 1).norm(dim=1)
        assert torch.all(per_clipped <= c * (1 + 1e-4))
        assert torch.allclose(summed, torch.cat([x.sum(0).reshape(-1) for x in clipped]), atol=1e-6)
        assert float(summed.norm()) <= len(examples) * c * (1 + 1e-4)
        gsm._close()  # no more per-sample hooks: plain autograd from here
        # reference: each example alone, plain autograd
        for i, ex in enumerate(examples):
            peft_model.zero_grad(set_to_none=True)
            alone, _ = example_losses(peft_model, [ex], tok.pad_token_id, torch.device("cpu"))
            grads = torch.autograd.grad(alone.sum(), params)
            for g, s in zip(grads, samples, strict=True):
                assert torch.allclose(g, s[i], atol=1e-5, rtol=1e-4)
    finally:
        peft_model.unload()
    assert not any("lora" in name for name, _ in model.named_modules())


def _delta(a: Path, b: Path) -> float:
    sa, sb = read_adapter(a), read_adapter(b)
    return math.sqrt(sum(float(np.sum((sa[k].astype(np.float64) - sb[k]) ** 2)) for k in sa))


def test_a_dp_update_differs_from_the_non_dp_one_and_is_repeatable_only_with_a_seed(
    tiny: Any, settings: LoraSettings, start: Path, tmp_path: Path, make_questions: Any
) -> None:
    model, tok = tiny
    qs = make_questions(16)
    tc = TrainConfig(lr=1e-2, batch_size=2, grad_accum=2, seed=3)
    plain = train_local(model, tok, start, qs, settings, tc, tmp_path / "plain", progress=False)
    dp = DpConfig(noise_multiplier=1.0, max_grad_norm=0.5, expected_batch=4, steps=4, seed=7)
    a = train_local(model, tok, start, qs, settings, tc, tmp_path / "a", progress=False, dp=dp)
    b = train_local(model, tok, start, qs, settings, tc, tmp_path / "b", progress=False, dp=dp)
    fresh = DpConfig(noise_multiplier=1.0, max_grad_norm=0.5, expected_batch=4, steps=4)
    c = train_local(model, tok, start, qs, settings, tc, tmp_path / "c", progress=False, dp=fresh)
    assert a.dp == dp and a.steps == 4 and plain.dp is None
    assert a.sha256 != plain.sha256 and _delta(tmp_path / "a", tmp_path / "plain") > 1e-3
    assert a.sha256 == b.sha256  # a fixed seed (experiments) repeats exactly
    assert c.sha256 != a.sha256  # production: sampling and noise from OS entropy
    # the noisy steps move the adapter, but AdamW keeps each coordinate's move about lr per step:
    # 4 steps of lr 1e-2 over n coordinates stay within 4 * 1e-2 * sqrt(n) (x 2 for Adam's bias)
    n = sum(v.size for v in read_adapter(start).values())
    assert 1e-3 < _delta(tmp_path / "a", start) < 2 * 4 * 1e-2 * math.sqrt(n)
    assert not any("lora" in name for name, _ in model.named_modules())
