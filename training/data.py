"""Typed loaders for the three medical QA sources, a deterministic hash split, and federation partitions.

Sources and splits (files under the data dir, default ``$MEDFED_DATA_DIR`` or ``<repo>/../shared/data``):

- ``medqa-us``: ``dev`` (1,272 rows, train here) and ``test`` (1,273 rows, evaluate), English.
- ``medqa-mainland``: ``dev`` (3,425) and ``test`` (3,426), Chinese.
- ``medmcqa``: one file ``dev.json`` (4,183 rows) split by :func:`split_by_hash` on the row ``id``
  with ``MEDMCQA_EVAL_FRACTION`` (20%) and salt ``MEDMCQA_SALT`` into ``train`` and ``eval``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import DataError

LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H")
SOURCES = ("medqa-us", "medqa-mainland", "medmcqa")
SPLITS = {"medqa-us": ("dev", "test"), "medqa-mainland": ("dev", "test"), "medmcqa": ("train", "eval")}
# The split a site trains on and the split it is evaluated on, per source.
TRAIN_SPLIT = {"medqa-us": "dev", "medqa-mainland": "dev", "medmcqa": "train"}
EVAL_SPLIT = {"medqa-us": "test", "medqa-mainland": "test", "medmcqa": "eval"}
LANGUAGE = {"medqa-us": "en", "medqa-mainland": "zh", "medmcqa": "en"}
MEDMCQA_EVAL_FRACTION = 0.2
MEDMCQA_SALT = "medfed-medmcqa-v1"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is the 0-based index into ``options``."""

    id: str
    source: str
    language: str
    question: str
    options: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Conversation:
    """One supervised fine-tuning example: chat ``messages`` as (role, content) pairs.

    The loss is on the assistant turns at index ``train_from`` or later (``prompt``/``completion``
    rows: the completion's turns; ``messages`` rows: every assistant turn).
    """

    id: str
    source: str
    messages: tuple[tuple[str, str], ...]
    train_from: int = 0


Record = Question | Conversation
ROLES = ("system", "user", "assistant", "tool")


def kind_of(record: Record) -> str:
    """``"mc"`` for a multiple-choice question, ``"sft"`` for a conversation."""
    return "mc" if isinstance(record, Question) else "sft"


def fingerprint(record: Record) -> str:
    """sha256 of a record's normalised text (case and whitespace folded): finds the same row under
    two ids, e.g. a held-out file that repeats training rows."""
    if isinstance(record, Question):
        parts = [record.question, *record.options]
    else:
        parts = [f"{role}:{content}" for role, content in record.messages]
    text = "\x1f".join(" ".join(p.split()).casefold() for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def default_data_dir() -> Path:
    """``$MEDFED_DATA_DIR`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("MEDFED_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (set MEDFED_DATA_DIR to the folder holding the datasets)")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove the row"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} missing or not a non-empty string")
    return value.strip()


def load_medqa(path: str | os.PathLike[str], source: str) -> list[Question]:
    """Load a MedQA JSONL file (``question``, ``options`` {A..D}, ``answer_idx`` letter).

    Ids are ``<source>/<file stem>/<line>`` because MedQA rows carry no id of their own.
    """
    p = Path(path)
    language = LANGUAGE.get(source, "en")
    out: list[Question] = []
    for lineno, row in _rows(p):
        where = f"{p}:{lineno}"
        question = _text(row, "question", where)
        options = row.get("options")
        if not isinstance(options, dict) or not options:
            raise DataError(f"{where}: field 'options' missing or not an object of letter -> text")
        letters = sorted(options)
        if tuple(letters) != LETTERS[: len(letters)] or len(letters) < 2:
            raise DataError(f"{where}: option letters {letters} are not A, B, C, ... in sequence")
        opts = tuple(_text(options, k, f"{where} option") for k in letters)
        idx = row.get("answer_idx")
        if not isinstance(idx, str) or idx not in letters:
            raise DataError(f"{where}: answer_idx {idx!r} is not one of {letters}")
        out.append(
            Question(
                id=f"{source}/{p.stem}/{lineno}",
                source=source,
                language=language,
                question=question,
                options=opts,
                answer=letters.index(idx),
            )
        )
    return out


def load_medmcqa(path: str | os.PathLike[str]) -> list[Question]:
    """Load MedMCQA (``opa``..``opd``, 1-based ``cop``) into questions with a 0-based answer."""
    p = Path(path)
    out: list[Question] = []
    seen: set[str] = set()
    for lineno, row in _rows(p):
        where = f"{p}:{lineno}"
        qid = _text(row, "id", where)
        if qid in seen:
            raise DataError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        question = _text(row, "question", where)
        opts = tuple(_text(row, k, where) for k in ("opa", "opb", "opc", "opd"))
        cop = row.get("cop")
        if isinstance(cop, bool) or not isinstance(cop, int) or not 1 <= cop <= 4:
            raise DataError(f"{where}: cop {cop!r} is not 1..4 (MedMCQA's correct option is 1-based here)")
        out.append(
            Question(
                id=f"medmcqa/{qid}",
                source="medmcqa",
                language="en",
                question=question,
                options=opts,
                answer=cop - 1,
            )
        )
    return out


def hash_fraction(key: str, salt: str) -> float:
    """A stable number in [0, 1) from sha256(salt + key)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(
    records: Iterable[Question], eval_fraction: float, salt: str
) -> tuple[list[Question], list[Question]]:
    """Split into (train, eval) by a hash of each id: stable across runs and machines, disjoint."""
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction {eval_fraction} must be strictly between 0 and 1")
    train: list[Question] = []
    held: list[Question] = []
    for q in records:
        (held if hash_fraction(q.id, salt) < eval_fraction else train).append(q)
    return train, held


def load_source(name: str, split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Question]:
    """Load one source's split: medqa-us/medqa-mainland ``dev``/``test``; medmcqa ``train``/``eval``."""
    if name not in SPLITS:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    if split not in SPLITS[name]:
        raise DataError(f"source {name!r} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "medmcqa":
        train, held = split_by_hash(
            load_medmcqa(root / "medmcqa" / "dev.json"), MEDMCQA_EVAL_FRACTION, MEDMCQA_SALT
        )
        return train if split == "train" else held
    return load_medqa(root / name / f"{split}.jsonl", name)


def partition_non_iid(records: Iterable[Question]) -> dict[str, list[Question]]:
    """One institution per source: {source: its questions}, keyed in sorted source order."""
    groups: dict[str, list[Question]] = {}
    for q in records:
        groups.setdefault(q.source, []).append(q)
    return {k: groups[k] for k in sorted(groups)}


def partition_iid(records: Sequence[Question], n: int, seed: int) -> list[list[Question]]:
    """Shuffle with ``seed`` and deal round-robin into ``n`` near-equal, disjoint shards."""
    if n < 1:
        raise DataError(f"cannot partition into {n} shards; n must be >= 1")
    order = list(records)
    random.Random(seed).shuffle(order)
    return [order[i::n] for i in range(n)]
