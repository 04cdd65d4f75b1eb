"""Errors raised by the experiment runner; each message names the fix."""

from training.errors import TrainingError


class ExperimentError(TrainingError):
    """Bad experiment options, a data-leakage check that failed, or an unreadable output dir."""
