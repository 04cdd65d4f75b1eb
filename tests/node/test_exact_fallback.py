"""The way back from a poisoned global adapter under `exact` aggregation (node/recovery.py).

With `exact` a round's starting model is the base weights plus the global deltas of its lineage,
merged in order. After `fallback_after` failed rounds the poisoned delta leaves the lineage; the
learner puts its unmerged base weights back and merges the healthy deltas again. Real tiny model,
real adapter files, a real state store: the model after the fallback is byte for byte the model of
a node that never merged the poison, and it trains the same update bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trio
from eth_account import Account
from test_ipfs_fallback import COORD, _node

from node.config import TEMPLATE, load_config
from node.learning import Learner, lora_settings
from node.roles.participant import global_history
from node.state import Outcome
from training.adapter_io import write_canonical_adapter
from training.aggregation import AggregationInput, aggregate
from training.data import Question
from training.errors import TrainingError
from training.lora import LoraSettings, initial_adapter_state
from training.models import build_tiny_model

QUESTIONS = [
    Question(
        f"s/{i}",
        "s",
        "en",
        f"Q{i}: which?",
        tuple("yes" if j == i % 4 else f"no{j}" for j in range(4)),
        i % 4,
    )
    for i in range(8)
]


def _config(tmp_path: Path) -> Any:
    text = (
        TEMPLATE.replace("0x" + "0" * 40, COORD)
        .replace('base = "default"', 'base = "tiny"')
        .replace('strategy = "fedavg"', 'strategy = "exact"')
    )
    text = text.replace("max_steps = 20", "max_steps = 2").replace("max_length = 256", "max_length = 64")
    text = text.replace("rank = 16", "rank = 4").replace("alpha = 32", "alpha = 8")
    text = text.replace("dropout = 0.1", "dropout = 0.0")
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return load_config(p)


def _global(settings: LoraSettings, out: Path, seed: int, scale: float) -> str:
    """An `exact` global of two updates (rank 2r), its B factors drawn with ``scale``; its weights path."""
    model, _ = build_tiny_model()
    rng = np.random.default_rng(seed)
    inputs = []
    for i in range(2):
        state = initial_adapter_state(model, settings, seed + i)
        state = {
            k: v if "lora_A" in k else rng.normal(0, scale, v.shape).astype(np.float32)
            for k, v in state.items()
        }
        inputs.append(AggregationInput(f"0x{i + 1:040x}", 8, state))
    write_canonical_adapter(aggregate("exact", inputs), settings.stacked(2), "medfed/tiny-llama", out)
    return str(out / "adapter_model.safetensors")


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_falling_back_unmerges_the_poisoned_delta_bit_for_bit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path)
    settings = lora_settings(cfg)
    healthy = _global(settings, tmp_path / "g1", 1, 0.02)
    poisoned = _global(settings, tmp_path / "g2", 3, 1e30)  # finite; its delta wrecks the model
    start_dir = tmp_path / "initial"
    write_canonical_adapter(
        initial_adapter_state(build_tiny_model()[0], settings, 0), settings, "medfed/tiny-llama", start_dir
    )
    start = str(start_dir / "adapter_model.safetensors")

    learner = Learner(cfg, settings, tmp_path / "scratch-a")
    pristine = _weights(learner)
    learner.merge_history([healthy, poisoned])
    assert not _same(_weights(learner), pristine)
    # training on the poisoned model diverges; the message names the merged delta, not the lr
    with pytest.raises(TrainingError, match=r"global delta g2 merged into the base weights \(exact\)"):
        learner.train(start, QUESTIONS, 3, [healthy, poisoned])

    # the fallback drops the poisoned delta: base weights restored, the healthy one merged again
    with caplog.at_level(logging.WARNING, "medfed.learner"):
        sha_a, _, _ = learner.train(start, QUESTIONS, 4, [healthy])
    assert any("un-merging" in r.getMessage() and "g2" in r.getMessage() for r in caplog.records)
    assert learner.merged == [healthy]

    fresh = Learner(cfg, settings, tmp_path / "scratch-b")  # a node that never saw the poison
    fresh.merge_history([healthy])
    assert _same(_weights(learner), _weights(fresh))
    sha_b, _, _ = fresh.train(start, QUESTIONS, 4, [healthy])
    assert sha_a == sha_b  # the same update bytes: verifiers and aggregators stay in step

    learner.merge_history([])  # down to the initial adapter: the base model as loaded
    assert _same(_weights(learner), pristine)


def test_the_history_an_exact_round_merges_leaves_the_abandoned_global_out(tmp_path: Path) -> None:
    node: Any = _node(tmp_path, "", bytes(Account.create().key))
    settings = LoraSettings(rank=4, alpha=8)
    initial = node.artifacts.put_state(initial_adapter_state(node._model, settings, 0), "global", 0)
    node.store.set_meta("initial_sha256", initial)
    shas = {}
    for r, scale in ((1, 0.02), (2, 1e15), (5, 0.02)):  # round 2's global is the poisoned one
        state = initial_adapter_state(node._model, settings, r)
        state = {k: v if "lora_A" in k else np.full(v.shape, scale, np.float32) for k, v in state.items()}
        shas[r] = node.artifacts.put_state(state, "global", r)
    for r in (1, 2, 5):
        node.store.set_outcome(Outcome(r, "finalized", 0, shas[r], "", ""))
    for r in (3, 4):
        node.store.set_outcome(Outcome(r, "failed", 2, "", "", "too few commits"))

    def history(before: int) -> list[str]:
        paths = trio.run(global_history, node, before, node.now() + 5)
        by_path = {str(node.artifacts.weights(s)): r for r, s in shas.items()}
        return [by_path[p] for p in paths]

    assert node.cfg.model.fallback_after == 2
    assert history(3) == [1, 2]  # round 3 trains on the poisoned model (and fails)
    assert history(4) == [1, 2]  # one failure: keep trying
    assert history(5) == [1]  # two failed rounds in a row: the poisoned delta is un-merged
    assert history(6) == [1, 5]  # round 5 built on the healthy lineage
    node.store.close()
