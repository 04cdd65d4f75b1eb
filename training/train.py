"""Local LoRA training of one site from the global adapter, written as a canonical adapter."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.adapter_io import CONFIG_NAME, _state_rank, read_adapter, write_canonical_adapter
from training.data import Record
from training.errors import AdapterInvalid, TrainingError
from training.forward import logits_at, model_lock, pad_batch
from training.lora import LoraSettings
from training.privacy import DpConfig
from training.prompts import IGNORE_INDEX, Example, encode_record


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings (study: AdamW, lr 2e-4 linear decay, batch 1, accumulation 4, 1 epoch)."""

    lr: float = 2e-4
    batch_size: int = 1
    grad_accum: int = 4
    epochs: int = 1
    max_steps: int | None = None
    max_length: int = 768
    seed: int = 0
    device: str | None = None
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    target: str = "letter"  # a question's trained tokens: its answer letter, or its answer's text


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_local`; ``losses`` is the mean answer-token loss of each optimiser step."""

    sha256: str
    num_samples: int
    steps: int
    final_loss: float
    tokens_per_s: float
    seconds: float
    losses: tuple[float, ...] = ()
    dp: DpConfig | None = None  # the DP-SGD settings it trained with (None: no DP)


def attach_adapter(model: Any, adapter: str | Path, settings: LoraSettings, trainable: bool) -> Any:
    """Wrap ``model`` in a fresh PeftModel holding the adapter's weights (call ``.unload()`` after)."""
    from peft import get_peft_model, set_peft_model_state_dict

    state = read_adapter(adapter)
    rank = _state_rank(state)
    if rank % settings.rank:
        raise AdapterInvalid(f"{adapter}: rank {rank} does not fit the federation rank {settings.rank}")
    cfg = settings if rank == settings.rank else settings.stacked(rank // settings.rank)
    peft_model = get_peft_model(model, cfg.to_peft_config(inference_mode=not trainable))
    device = next(model.parameters()).device
    tensors = {k: torch.from_numpy(v).to(device) for k, v in state.items()}
    result = set_peft_model_state_dict(peft_model, tensors)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        peft_model.unload()
        raise AdapterInvalid(f"{adapter}: tensors {unexpected[:2]} do not match any module of the base model")
    return peft_model


def _base_model_name(start_adapter: str | Path) -> str:
    cfg = Path(start_adapter)
    cfg = (cfg if cfg.is_dir() else cfg.parent) / CONFIG_NAME
    try:
        return str(json.loads(cfg.read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _checkpointing(model: Any, on: bool) -> None:
    """Gradient (activation) checkpointing on or off, under the name this transformers uses."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        if on:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def answer_loss(
    model: Any, batch: Sequence[Example], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the answer tokens of a batch, and the number of real tokens in it."""
    ids, mask = pad_batch([ex.input_ids for ex in batch], pad_id, device)
    rows, cols, targets = [], [], []
    for i, ex in enumerate(batch):
        for j, label in enumerate(ex.labels):
            if label != IGNORE_INDEX:
                rows.append(i)
                cols.append(j - 1)  # position j-1 predicts token j
                targets.append(label)
    index = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
    logits = logits_at(model, ids, mask, *index).float()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=device))
    return loss, int(mask.sum())


def example_losses(
    model: Any, batch: Sequence[Example], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Each example's mean cross-entropy over its own answer tokens ``(len(batch),)``, and the number
    of real tokens (DP-SGD clips per example, so no example may weigh more for being longer)."""
    ids, mask = pad_batch([ex.input_ids for ex in batch], pad_id, device)
    rows, cols, targets = [], [], []
    for i, ex in enumerate(batch):
        for j, label in enumerate(ex.labels):
            if label != IGNORE_INDEX:
                rows.append(i)
                cols.append(j - 1)
                targets.append(label)
    row_t = torch.tensor(rows, device=device)
    logits = logits_at(model, ids, mask, row_t, torch.tensor(cols, device=device)).float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=device), reduction="none")
    sums = torch.zeros(len(batch), device=device).index_add(0, row_t, nll)
    counts = torch.zeros(len(batch), device=device).index_add(0, row_t, torch.ones_like(nll))
    return sums / counts.clamp(min=1.0), int(mask.sum())


# A LoRA factor this large is not something local training produces from a sane start: a start
# adapter beyond it is the likely cause of a divergence (a poisoned global), not the learning rate.
SUSPECT_START_ABS = 1e3


def _peak(adapter: str | Path) -> float:
    """Largest |value| in an adapter file (NaN if it cannot be read)."""
    try:
        state = read_adapter(adapter)
        return max((float(np.max(np.abs(v))) for v in state.values() if v.size), default=0.0)
    except TrainingError:
        return float("nan")


def divergence_message(start_adapter: str | Path, lr: float, merged: Sequence[str | Path] = ()) -> str:
    """Why training diverged, naming the likely cause: a poisoned start adapter, a poisoned global
    delta merged into the base weights (``merged``: `exact` aggregation), or the learning rate."""
    peak = _peak(start_adapter)
    if not math.isfinite(peak) or peak > SUSPECT_START_ABS:
        return (
            f"training diverged (NaN/Inf): the global adapter it started from is likely poisoned "
            f"(largest |value| {peak:.3g}, far beyond what training produces); not the learning rate. "
            "The federation's bounds should have kept it out; members fall back to the last healthy "
            "global after [aggregation] fallback_after failed rounds (docs/troubleshooting.md)"
        )
    for path in merged:
        bad = _peak(path)
        if not math.isfinite(bad) or bad > SUSPECT_START_ABS:
            return (
                f"training diverged (NaN/Inf): the global delta {Path(path).parent.name[:12]} merged into "
                f"the base weights (exact) is likely poisoned (largest |value| {bad:.3g}); not the "
                "learning rate. Members fall back to the last healthy global after [aggregation] "
                "fallback_after failed rounds, un-merging it (docs/troubleshooting.md)"
            )
    return (
        f"training diverged (NaN/Inf) from a healthy-looking start adapter (largest |value| {peak:.3g}): "
        f"lower [training] learning_rate (now {lr:g})"
    )


def train_local(
    model: Any,
    tokenizer: Any,
    start_adapter: str | Path,
    questions: Sequence[Record],
    settings: LoraSettings,
    config: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    base_model: str | None = None,
    metadata: Mapping[str, str] | None = None,
    dp: DpConfig | None = None,
) -> TrainResult:
    """Train a LoRA on ``questions`` (multiple-choice questions or chat conversations) from
    ``start_adapter`` and write it canonically to ``out_dir``.

    The base model is left as it was (the adapter is attached to a fresh PeftModel and unloaded
    afterwards), so one loaded base model can serve many calls; calls on the same model from
    several threads are serialised by a per-model lock. ``base_model`` is the
    name recorded in ``adapter_config.json`` (default: the start adapter's). ``metadata`` goes into
    the file's header (a node's update binding, `training.adapter_io.update_metadata`).

    ``dp``: train with DP-SGD instead (training/privacy.py): ``dp.steps`` steps on Poisson-sampled
    batches, each example's LoRA gradient clipped and Gaussian noise added (Opacus); ``config``'s
    batch_size is then the micro-batch size, its grad_accum, epochs, max_steps and max_grad_norm
    are not used.
    """
    from peft import get_peft_model_state_dict
    from tqdm import tqdm

    if not questions:
        raise TrainingError("no training examples: the site's training split is empty")
    device = torch.device(config.device) if config.device else next(model.parameters()).device
    if not getattr(model, "is_loaded_in_4bit", False):
        model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = [encode_record(q, tokenizer, config.max_length, config.target) for q in questions]
    rng = random.Random(config.seed)
    order: list[int] = []
    for _ in range(config.epochs):
        epoch = list(range(len(examples)))
        rng.shuffle(epoch)
        order.extend(epoch)
    micro = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    total_steps = math.ceil(len(micro) / config.grad_accum)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
        micro = micro[: total_steps * config.grad_accum]
    if dp is not None:
        total_steps = dp.steps

    with model_lock(model):
        torch.manual_seed(config.seed)
        peft_model = attach_adapter(model, start_adapter, settings, trainable=True)
        if config.gradient_checkpointing:
            _checkpointing(model, True)
        try:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: max(0.0, 1.0 - s / total_steps)
            )
            peft_model.train()
            losses: list[float] = []
            tokens = 0
            started = time.perf_counter()
            bar = tqdm(
                total=total_steps, desc="local training", unit="step", disable=not progress, leave=False
            )
            if dp is not None:
                tokens = _dp_sgd(
                    peft_model,
                    params,
                    optimizer,
                    scheduler,
                    examples,
                    pad_id,
                    device,
                    config,
                    dp,
                    losses,
                    bar,
                )
            for step in range(total_steps if dp is None else 0):
                group = micro[step * config.grad_accum : (step + 1) * config.grad_accum]
                step_loss = 0.0
                for indices in group:
                    with _autocast(device):
                        loss, n_tok = answer_loss(peft_model, [examples[i] for i in indices], pad_id, device)
                    (loss / len(group)).backward()
                    step_loss += float(loss.detach()) / len(group)
                    tokens += n_tok
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
                elapsed = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
            bar.close()
            seconds = time.perf_counter() - started
            raw = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
            state = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in raw.items()}
        finally:
            peft_model.unload()
            if config.gradient_checkpointing:
                _checkpointing(model, False)
            model.eval()
    if not all(np.isfinite(v).all() for v in state.values()) or not all(map(math.isfinite, losses)):
        raise TrainingError(divergence_message(start_adapter, config.lr))
    sha = write_canonical_adapter(
        state, settings, base_model or _base_model_name(start_adapter), out_dir, metadata
    )
    return TrainResult(
        sha256=sha,
        num_samples=len(questions),
        steps=total_steps,
        final_loss=losses[-1] if losses else float("nan"),
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        losses=tuple(losses),
        dp=dp,
    )


def _dp_sgd(
    peft_model: Any,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device,
    config: TrainConfig,
    dp: DpConfig,
    losses: list[float],
    bar: Any,
) -> int:
    """The DP-SGD loop of :func:`train_local`; appends each step's mean loss to ``losses`` and
    returns the number of tokens trained on.

    Opacus hooks only the modules that hold trainable parameters (the LoRA A/B linears: the base is
    frozen) to get per-example gradients; its DPOptimizer clips each example's gradient to
    ``dp.max_grad_norm``, sums, adds N(0, (sigma C)^2) once per step and divides by the expected
    batch. A Poisson batch larger than ``config.batch_size`` runs in micro-batches (Opacus's
    virtual steps); an empty one still takes its noisy step, as the accounting assumes."""
    import os
    import warnings

    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    seed = dp.seed if dp.seed is not None else int.from_bytes(os.urandom(8), "little")
    sampler = np.random.default_rng(seed)
    noise = torch.Generator(device=device)
    noise.manual_seed(int(sampler.integers(2**62)))
    rate = min(1.0, dp.expected_batch / len(examples))
    gsm = GradSampleModule(peft_model, batch_first=True, loss_reduction="mean", strict=False)
    dp_opt = DPOptimizer(
        optimizer,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=dp.expected_batch,
        loss_reduction="mean",
        generator=noise,
    )
    tokens = 0
    micro = max(1, config.batch_size)
    try:
        for _ in range(dp.steps):
            chosen = np.flatnonzero(sampler.random(len(examples)) < rate).tolist()
            chunks = [chosen[i : i + micro] for i in range(0, len(chosen), micro)]
            step_loss = 0.0
            if not chunks:
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)  # type: ignore[attr-defined]
                dp_opt.step()
            for k, chunk in enumerate(chunks):
                with _autocast(device):
                    per, n_tok = example_losses(peft_model, [examples[i] for i in chunk], pad_id, device)
                with warnings.catch_warnings():  # frozen inputs: the hooks see output grads only, as meant
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    per.mean().backward()
                step_loss += float(per.detach().sum()) / len(chosen)
                tokens += n_tok
                dp_opt.signal_skip_step(do_skip=k < len(chunks) - 1)
                dp_opt.step()
                dp_opt.zero_grad(set_to_none=True)
            dp_opt.zero_grad(set_to_none=True)
            scheduler.step()
            if chosen:  # an empty Poisson batch has no loss to report
                losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", batch=len(chosen))
    finally:
        gsm._close()
    return tokens
