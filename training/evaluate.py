"""Zero-shot multiple-choice accuracy by option-letter log-likelihood (plus the mean negative
log-likelihood of the correct option), held-out loss and perplexity of chat examples, and
fairness metrics.

For each question the model reads the prompt and we compare the log-probabilities of the option
letters' tokens at the answer position; the prediction is the most likely letter (ties: the
earliest). Batches are formed in a fixed length-sorted order so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data import Conversation, Question
from training.errors import TrainingError
from training.forward import logits_at, model_lock, pad_batch
from training.lora import LoraSettings
from training.prompts import (
    IGNORE_INDEX,
    encode_answer_text,
    encode_conversation,
    fit,
    letter_ids,
    prompt_ids,
)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy on ``n`` questions; ``predictions``/``answers`` are 0-based option indices in input order."""

    accuracy: float
    n: int
    correct: int
    predictions: tuple[int, ...]
    answers: tuple[int, ...] = ()
    # mean -log p(correct letter), nats: moves even while accuracy sits at chance (float noise across
    # batch sizes, so not part of equality)
    nll: float = field(default=float("nan"), compare=False)

    @property
    def per_item(self) -> list[bool]:
        """Whether each question was answered correctly (input order), for bootstrap intervals."""
        return [p == a for p, a in zip(self.predictions, self.answers, strict=True)]


def _adapter_settings(adapter: str | Path) -> LoraSettings:
    import json

    from training.adapter_io import CONFIG_NAME

    path = Path(adapter)
    cfg = json.loads(((path if path.is_dir() else path.parent) / CONFIG_NAME).read_text())
    return LoraSettings(
        rank=int(cfg["r"]),
        alpha=int(cfg["lora_alpha"]),
        dropout=float(cfg.get("lora_dropout", 0.0)),
        target_modules=tuple(cfg["target_modules"]),
    )


def letter_scores(
    model: Any, tokenizer: Any, questions: Sequence[Question], batch_size: int = 8, max_length: int = 1024
) -> np.ndarray:
    """``(len(questions), max options)`` log-probabilities of each option letter (-inf where absent)."""
    n_opt = max(len(q.options) for q in questions)
    letters = letter_ids(tokenizer, n_opt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    encoded = [tuple(fit(prompt_ids(q, tokenizer), max_length)) for q in questions]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    scores = np.full((len(questions), n_opt), -np.inf, dtype=np.float64)
    autocast: Any = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.no_grad()
    )
    with torch.no_grad(), autocast:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_batch([encoded[i] for i in chunk], pad_id, device)
            rows = torch.arange(len(chunk), device=device)
            cols = torch.tensor([len(encoded[i]) - 1 for i in chunk], device=device)
            logp = torch.log_softmax(logits_at(model, ids, mask, rows, cols).float(), dim=-1)
            picked = logp[:, letters].double().cpu().numpy()
            for row, i in enumerate(chunk):
                k = len(questions[i].options)
                scores[i, :k] = picked[row, :k]
    return scores


def evaluate(
    model: Any,
    tokenizer: Any,
    adapter: str | Path | None,
    questions: Sequence[Question],
    batch_size: int = 8,
    max_length: int = 1024,
) -> EvalResult:
    """Accuracy of ``model`` (with ``adapter`` attached when given) on ``questions``.

    The adapter is attached to a fresh PeftModel and removed afterwards; the base model is unchanged.
    """
    if not questions:
        raise TrainingError("no evaluation questions: the evaluation split is empty")
    scores = _with_adapter(
        model, adapter, lambda target: letter_scores(target, tokenizer, questions, batch_size, max_length)
    )
    predictions = tuple(int(np.argmax(row)) for row in scores)
    answers = tuple(q.answer for q in questions)
    correct = sum(p == a for p, a in zip(predictions, answers, strict=True))
    nll = float(-np.mean([scores[i, a] for i, a in enumerate(answers)]))
    return EvalResult(correct / len(questions), len(questions), correct, predictions, answers, nll)


def answer_nll(
    model: Any,
    tokenizer: Any,
    adapter: str | Path | None,
    questions: Sequence[Question],
    options: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int = 512,
) -> np.ndarray:
    """Per question, the mean negative log-likelihood (nats per token) of an option's text
    (default: the correct option) given the question without its options, in input order.

    The tokens are those :func:`training.prompts.encode_answer_text` labels (the text only, no
    end-of-turn). Unlike letter accuracy this moves with every change of the model's belief.
    """
    if not questions:
        raise TrainingError("no evaluation questions: the evaluation split is empty")
    picks = [q.answer for q in questions] if options is None else list(options)
    examples = [
        encode_answer_text(q, tokenizer, max_length, k) for q, k in zip(questions, picks, strict=True)
    ]
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = np.full(len(questions), np.nan, dtype=np.float64)

    def run(target: Any) -> None:
        device = next(target.parameters()).device
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                ids, mask = pad_batch([examples[i].input_ids for i in chunk], pad_id, device)
                rows, cols, labels, owner = [], [], [], []
                for r, i in enumerate(chunk):
                    for j, label in enumerate(examples[i].labels):
                        if label != IGNORE_INDEX:
                            rows.append(r)
                            cols.append(j - 1)  # position j-1 predicts token j
                            labels.append(label)
                            owner.append(i)
                index = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
                logp = torch.log_softmax(logits_at(target, ids, mask, *index).double(), dim=-1)
                picked = logp[torch.arange(len(labels), device=device), torch.tensor(labels, device=device)]
                token_nll = -picked.cpu().numpy()
                for i in chunk:
                    out[i] = float(token_nll[np.asarray(owner) == i].mean())

    _with_adapter(model, adapter, run)
    return out


@dataclass(frozen=True)
class SftEvalResult:
    """Held-out loss (mean negative log-likelihood per response token, nats) on ``n`` conversations."""

    loss: float
    n: int
    tokens: int

    @property
    def perplexity(self) -> float:
        """exp(loss): the effective number of equally likely next tokens."""
        return float(np.exp(min(self.loss, 700.0)))


def _with_adapter(model: Any, adapter: str | Path | None, fn: Any) -> Any:
    """``fn(target)`` under the model lock, in eval mode, with ``adapter`` attached (then removed)."""
    with model_lock(model):
        peft_model = None
        target = model
        if adapter is not None:
            from training.train import attach_adapter

            peft_model = attach_adapter(model, adapter, _adapter_settings(adapter), trainable=False)
            target = peft_model
        was_training = model.training
        target.eval()
        try:
            return fn(target)
        finally:
            if peft_model is not None:
                peft_model.unload()
            model.train(was_training)


def evaluate_sft(
    model: Any,
    tokenizer: Any,
    adapter: str | Path | None,
    conversations: Sequence[Conversation],
    batch_size: int = 8,
    max_length: int = 1024,
) -> SftEvalResult:
    """Held-out loss of ``model`` (+ ``adapter``) on the response tokens of ``conversations``,
    token-weighted over the whole set (the same tokens training puts its loss on)."""
    if not conversations:
        raise TrainingError("no evaluation conversations: the evaluation split is empty")
    examples = [encode_conversation(c, tokenizer, max_length) for c in conversations]
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run(target: Any) -> tuple[float, int]:
        device = next(target.parameters()).device
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = [examples[i] for i in order[start : start + batch_size]]
                ids, mask = pad_batch([ex.input_ids for ex in chunk], pad_id, device)
                rows, cols, targets = [], [], []
                for r, ex in enumerate(chunk):
                    for j, label in enumerate(ex.labels):
                        if label != IGNORE_INDEX:
                            rows.append(r)
                            cols.append(j - 1)
                            targets.append(label)
                index = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
                logits = logits_at(target, ids, mask, *index).double()
                nll = torch.nn.functional.cross_entropy(
                    logits, torch.tensor(targets, device=device), reduction="sum"
                )
                total += float(nll)
                count += len(targets)
        return total, count

    total, count = _with_adapter(model, adapter, run)
    return SftEvalResult(total / count, len(conversations), count)


Interval = tuple[float, float]


@dataclass(frozen=True)
class Fairness:
    """Macro-Acc, Min-Acc and harmonic mean across institutions, with bootstrap 95% intervals
    (``None`` without per-item results), plus each dataset's accuracy and interval."""

    macro: float
    min: float
    hmean: float
    macro_ci: Interval | None = None
    min_ci: Interval | None = None
    hmean_ci: Interval | None = None
    per_dataset: Mapping[str, float] = field(default_factory=dict)
    per_dataset_ci: Mapping[str, Interval] = field(default_factory=dict)


def _hmean(values: np.ndarray) -> np.ndarray:
    """Harmonic mean along the last axis; 0 where any value is 0."""
    with np.errstate(divide="ignore"):
        inv = np.where(values > 0, 1.0 / np.where(values > 0, values, 1.0), np.inf)
    total = inv.sum(axis=-1)
    return np.where(np.isinf(total), 0.0, values.shape[-1] / total)


def _ci(samples: np.ndarray) -> Interval:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def fairness(
    accuracies: Mapping[str, float],
    per_item: Mapping[str, Sequence[bool]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Fairness:
    """Fairness metrics over per-dataset accuracies; with ``per_item`` (each dataset's correctness
    list) also percentile-bootstrap 95% intervals, resampling items within each dataset."""
    if not accuracies:
        raise TrainingError("fairness needs at least one dataset accuracy")
    names = sorted(accuracies)
    acc = np.array([accuracies[k] for k in names], dtype=np.float64)
    result = Fairness(
        macro=float(acc.mean()), min=float(acc.min()), hmean=float(_hmean(acc)), per_dataset=dict(accuracies)
    )
    if per_item is None:
        return result
    missing = [k for k in names if k not in per_item or not len(per_item[k])]
    if missing:
        raise TrainingError(f"per_item lacks results for {missing}; pass every dataset's correctness list")
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        items = np.asarray(per_item[name], dtype=np.float64)
        idx = rng.integers(0, len(items), size=(n_boot, len(items)))
        boot[:, j] = items[idx].mean(axis=1)
    return Fairness(
        macro=result.macro,
        min=result.min,
        hmean=result.hmean,
        macro_ci=_ci(boot.mean(axis=1)),
        min_ci=_ci(boot.min(axis=1)),
        hmean_ci=_ci(_hmean(boot)),
        per_dataset=dict(accuracies),
        per_dataset_ci={name: _ci(boot[:, j]) for j, name in enumerate(names)},
    )
