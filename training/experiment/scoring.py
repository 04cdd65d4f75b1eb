"""Per-question correctness and answer-text NLL of a model (optionally with an adapter).

Thin glue over :func:`training.evaluate.evaluate` and :func:`training.evaluate.answer_nll`; the
experiment keeps per-question vectors (not only the means) so that all methods are bootstrapped
on the same questions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Question
from training.evaluate import answer_nll, evaluate

log = logging.getLogger("medfed.experiment")


def correctness(
    model: Any,
    tokenizer: Any,
    questions: Sequence[Question],
    adapter: Path | None,
    max_length: int = 512,
    desc: str = "eval",
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 per question, predicted option index per question), both in input order."""
    started = time.perf_counter()
    result = evaluate(
        model, tokenizer, adapter, list(questions), batch_size=batch_size, max_length=max_length
    )
    log.info("  %s: %d/%d correct (%.0f s)", desc, result.correct, result.n, time.perf_counter() - started)
    return np.asarray(result.per_item, dtype=np.int8), np.asarray(result.predictions, dtype=np.int8)


def nll(
    model: Any,
    tokenizer: Any,
    questions: Sequence[Question],
    adapter: Path | None,
    max_length: int = 512,
    desc: str = "eval",
    batch_size: int = 8,
) -> np.ndarray:
    """Answer-text NLL (nats per token) per question, in input order."""
    started = time.perf_counter()
    out = answer_nll(model, tokenizer, adapter, list(questions), batch_size=batch_size, max_length=max_length)
    log.info("  %s: answer NLL %.4f (%.0f s)", desc, float(out.mean()), time.perf_counter() - started)
    return out
