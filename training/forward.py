"""Logits only where they are needed: run the decoder, then the LM head on selected positions.

A causal LM's head over the full vocabulary is a large share of the compute for small models
(SmolLM2: 49k x 576 per token), and the loss/score only needs the answer position, so we skip it
everywhere else. Falls back to a full forward for models without a separable decoder.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

_locks: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The lock that serialises adapter attach/use/unload on one shared base model across threads."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def _parts(model: Any) -> tuple[Any, Any] | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "final_logit_softcapping", None):
        return None
    try:
        decoder = base.get_decoder()
        head = base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def logits_at(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Logits ``(K, vocab)`` at positions ``(rows[k], cols[k])`` of a right-padded batch."""
    parts = _parts(model)
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[rows, cols]
    decoder, head = parts
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head(hidden[rows, cols])


def pad_batch(
    sequences: list[tuple[int, ...]], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id sequences into (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids.to(device), mask.to(device)
