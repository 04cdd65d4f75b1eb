"""The local backend: every task runs one after another in this process, on one loaded model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from training.experiment.tasks import (
    AdapterFiles,
    EvalJob,
    EvalOutcome,
    ModelHolder,
    TrainJob,
    TrainOutcome,
    initial_adapter,
    run_eval,
    run_train,
)
from training.lora import LoraSettings


class LocalBackend:
    """Runs the task functions in-process (``progress`` shows the training bars)."""

    name = "local"

    def __init__(self, model: str, device: str | None, progress: bool = True) -> None:
        self.holder = ModelHolder(model, device)
        self.progress = progress
        self._tasks = 0
        self._task_s = 0.0

    def start(self) -> dict[str, Any]:
        t = time.perf_counter()
        self.holder.load()
        return {"device": self.holder.device_name(), "model_load_s": time.perf_counter() - t, "workers": 1}

    def initial_adapter(self, settings: LoraSettings, seed: int, base_model: str) -> AdapterFiles:
        return initial_adapter(self.holder, settings, seed, base_model)

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        out = []
        for job in jobs:
            t = time.perf_counter()
            out.append(run_train(self.holder, job, progress=self.progress, worker="local"))
            self._count(time.perf_counter() - t)
        return out

    def evaluate(self, jobs: Sequence[EvalJob]) -> list[EvalOutcome]:
        out = []
        for job in jobs:
            t = time.perf_counter()
            out.append(run_eval(self.holder, job, worker="local"))
            self._count(time.perf_counter() - t)
        return out

    def _count(self, seconds: float) -> None:
        self._tasks += 1
        self._task_s += seconds

    def stats(self) -> dict[str, float]:
        return {"tasks": float(self._tasks), "task_s": self._task_s, "model_loads": float(self.holder.loads)}

    def close(self) -> None:
        pass
