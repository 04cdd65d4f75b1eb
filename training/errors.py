"""Exceptions raised by the training package; each message names what is wrong and how to fix it."""


class TrainingError(Exception):
    """Base class for every error raised by ``training``."""


class DataError(TrainingError):
    """A dataset file is missing or a row is malformed (the message names file:line)."""


class ModelError(TrainingError):
    """A base model could not be loaded."""


class AdapterInvalid(TrainingError):
    """An adapter file does not match the federation's LoRA config (the message says why)."""


class AggregationError(TrainingError):
    """Aggregation inputs are inconsistent (different keys, shapes or ranks) or empty."""
