"""Where the experiment's tasks run: in this process (``local``) or on Ray actors (``ray``).

Both backends execute the same task functions (:mod:`training.experiment.tasks`); only the
placement differs, so the two give byte-identical adapters and identical metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from training.experiment.tasks import AdapterFiles, EvalJob, EvalOutcome, TrainJob, TrainOutcome
from training.lora import LoraSettings

BACKENDS = ("local", "ray")


class Backend(Protocol):
    """Runs batches of training and evaluation jobs; results come back in job order."""

    name: str

    def start(self) -> dict[str, Any]:
        """Load the model(s); returns facts for the report (``device``, ``model_load_s``, ...)."""
        ...

    def initial_adapter(self, settings: LoraSettings, seed: int, base_model: str) -> AdapterFiles:
        """The seeded starting adapter (needs the model's shapes)."""
        ...

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        """Run every site-round in ``jobs`` (in parallel where the backend can)."""
        ...

    def evaluate(self, jobs: Sequence[EvalJob]) -> list[EvalOutcome]:
        """Run every evaluation pass in ``jobs`` (in parallel where the backend can)."""
        ...

    def stats(self) -> dict[str, float]:
        """Task counts and overheads, merged into the report's timing."""
        ...

    def close(self) -> None:
        """Release workers (idempotent)."""
        ...
