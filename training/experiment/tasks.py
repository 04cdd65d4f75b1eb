"""The experiment's units of work, shared by every backend: one site-round of local training and
one evaluation pass over one test set.

A job carries everything its task needs (the start adapter's bytes, the site's questions, the
seeds), so the same function gives the same bytes whether it runs in the driver process (local
backend) or in a Ray actor on another machine (Ray backend). A :class:`ModelHolder` loads the base
model once per process and rebuilds the ``exact`` method's merged base weights from the chain of
aggregates the job names, applying the same float operations in the same order as the driver did.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.adapter_io import WEIGHTS_NAME, sha256_file, write_canonical_adapter
from training.aggregation import merge_exact_delta
from training.data import Question
from training.experiment import scoring
from training.lora import LoraSettings, initial_adapter_state
from training.models import load_base_model
from training.privacy import DpConfig
from training.train import TrainConfig, train_local

log = logging.getLogger("medfed.experiment")

AdapterFiles = dict[str, bytes]  # file name -> bytes of one adapter directory


def read_adapter_files(directory: Path) -> AdapterFiles:
    """Every file of an adapter directory, by name (what travels between driver and workers)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def write_adapter_files(files: Mapping[str, bytes], directory: Path) -> Path:
    """Write an adapter directory from :func:`read_adapter_files` output; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


@dataclass(frozen=True)
class Merge:
    """One ``exact`` aggregate merged into the base weights: a key naming it, its tensors, its scaling."""

    key: str
    state: dict[str, np.ndarray]
    settings: LoraSettings


@dataclass(frozen=True)
class TrainJob:
    """One site's local training in one round, from ``start`` on the base model (plus ``merges``)."""

    site: str
    round: int
    method: str
    start: AdapterFiles
    questions: tuple[Question, ...]
    settings: LoraSettings
    config: TrainConfig
    base_model: str
    merges: tuple[Merge, ...] = ()
    dp: DpConfig | None = None  # DP-SGD settings (None: no DP)


@dataclass(frozen=True)
class TrainOutcome:
    """What a training task returns: the adapter's files and the run's figures."""

    files: AdapterFiles
    sha256: str
    num_samples: int
    steps: int
    mean_loss: float
    final_loss: float
    seconds: float
    tokens_per_s: float
    worker: str = ""


@dataclass(frozen=True)
class EvalJob:
    """Score one model (base + ``merges``, with ``adapter`` attached when given) on one test set."""

    label: str
    test_set: str
    questions: tuple[Question, ...]
    adapter: AdapterFiles | None
    max_length: int
    merges: tuple[Merge, ...] = ()
    metrics: tuple[str, ...] = ("accuracy", "nll")


@dataclass(frozen=True)
class EvalOutcome:
    """Per-question 0/1 correctness, predicted option index and answer-text NLL, in the job's
    question order (empty arrays for a metric the job did not ask for)."""

    correct: np.ndarray
    predictions: np.ndarray
    seconds: float
    worker: str = ""
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class ModelHolder:
    """The base model of one process, loaded once, and the last ``exact`` merge chain built on it."""

    spec: str
    device: str | None
    model: Any = None
    tokenizer: Any = None
    _chain: tuple[str, ...] = ()
    _merged: Any = None
    loads: int = field(default=0)

    def load(self) -> None:
        """Load the base model now (no-op when already loaded)."""
        if self.model is None:
            self.model, self.tokenizer = load_base_model(self.spec, self.device)
            self.loads += 1

    def device_name(self) -> str:
        self.load()
        return str(next(self.model.parameters()).device)

    def model_for(self, merges: Sequence[Merge]) -> Any:
        """The base model with ``merges`` added in order (a deep copy; the base is never changed).

        The last chain is kept: a request that extends it by one merge adds that merge in place,
        any other request rebuilds from the base, so the result's bits never depend on the path.
        """
        self.load()
        keys = tuple(m.key for m in merges)
        if not keys:
            return self.model
        if keys == self._chain:
            return self._merged
        if self._merged is not None and keys[:-1] == self._chain:
            last = merges[-1]
            self._merged = merge_exact_delta(self._merged, last.state, last.settings, in_place=True)
        else:
            self._merged = None  # free the old copy before building the new one
            first = merges[0]
            merged = merge_exact_delta(self.model, first.state, first.settings, in_place=False)
            for m in merges[1:]:
                merged = merge_exact_delta(merged, m.state, m.settings, in_place=True)
            self._merged = merged
        self._chain = keys
        return self._merged


def initial_adapter(holder: ModelHolder, settings: LoraSettings, seed: int, base_model: str) -> AdapterFiles:
    """The seeded round-1 adapter every method starts from, as files."""
    holder.load()
    with tempfile.TemporaryDirectory(prefix="medfed-init-") as tmp:
        dest = Path(tmp) / "initial"
        state = initial_adapter_state(holder.model, settings, seed)
        write_canonical_adapter(state, settings, base_model, dest)
        return read_adapter_files(dest)


def run_train(holder: ModelHolder, job: TrainJob, progress: bool = False, worker: str = "") -> TrainOutcome:
    """Train one site-round (:func:`training.train.train_local`) and return the adapter's files."""
    model = holder.model_for(job.merges)
    with tempfile.TemporaryDirectory(prefix="medfed-train-") as tmp:
        start = write_adapter_files(job.start, Path(tmp) / "start")
        dest = Path(tmp) / "out"
        res = train_local(
            model,
            holder.tokenizer,
            start,
            list(job.questions),
            job.settings,
            job.config,
            dest,
            progress=progress,
            base_model=job.base_model,
            dp=job.dp,
        )
        files = read_adapter_files(dest)
        assert sha256_file(dest / WEIGHTS_NAME) == res.sha256
    return TrainOutcome(
        files=files,
        sha256=res.sha256,
        num_samples=res.num_samples,
        steps=res.steps,
        mean_loss=float(np.mean(res.losses)) if res.losses else float("nan"),
        final_loss=res.final_loss,
        seconds=res.seconds,
        tokens_per_s=res.tokens_per_s,
        worker=worker,
    )


def run_eval(holder: ModelHolder, job: EvalJob, worker: str = "") -> EvalOutcome:
    """Score one model on one test set (:mod:`training.experiment.scoring`): letter accuracy and
    answer-text NLL, as ``job.metrics`` asks."""
    model = holder.model_for(job.merges)
    started = time.perf_counter()
    correct = predictions = nll = np.zeros(0)
    desc = f"{job.label} on {job.test_set}"
    with tempfile.TemporaryDirectory(prefix="medfed-eval-") as tmp:
        adapter = write_adapter_files(job.adapter, Path(tmp) / "adapter") if job.adapter else None
        if "accuracy" in job.metrics:
            correct, predictions = scoring.correctness(
                model, holder.tokenizer, list(job.questions), adapter, max_length=job.max_length, desc=desc
            )
        if "nll" in job.metrics:
            nll = scoring.nll(
                model, holder.tokenizer, list(job.questions), adapter, max_length=job.max_length, desc=desc
            )
    return EvalOutcome(correct, predictions, time.perf_counter() - started, worker, nll)
