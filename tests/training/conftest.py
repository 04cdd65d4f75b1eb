"""Fixtures for training tests: the tiny model built once, its LoRA settings, small question sets."""

from __future__ import annotations

from typing import Any

import pytest

from training.data import Question
from training.lora import LoraSettings
from training.models import build_tiny_model


@pytest.fixture(scope="session")
def tiny() -> tuple[Any, Any]:
    """The tiny random Llama model and its byte-level tokenizer (shared; tests must not mutate it)."""
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def settings() -> LoraSettings:
    return LoraSettings(rank=4, alpha=8, dropout=0.0)


def _make_questions(n: int, language: str = "en") -> list[Question]:
    """Short synthetic questions whose answer follows a learnable pattern (the option with 'yes')."""
    out = []
    for i in range(n):
        answer = i % 4
        options = tuple("yes" if j == answer else f"no{j}" for j in range(4))
        out.append(
            Question(
                id=f"synthetic/{i}",
                source="synthetic",
                language=language,
                question=f"Q{i}: which?",
                options=options,
                answer=answer,
            )
        )
    return out


@pytest.fixture(scope="session")
def make_questions() -> Any:
    """Factory: ``make_questions(n, language="en")`` -> synthetic questions."""
    return _make_questions
