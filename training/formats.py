"""A site's own data files (JSONL, JSON, CSV, Parquet, read with Hugging Face ``datasets``) as
multiple-choice questions or supervised fine-tuning conversations.

Kinds (``format``):

- ``mc``: multiple choice with configurable columns. ``question`` (text), ``options`` (a list,
  an object {letter: text}, a JSON list in a CSV cell, or a list of column names, one option
  each) and ``answer`` (a letter, the option's text, or an index, 0-based unless ``answer_base``
  is 1).
- ``chat``: a ``messages`` column of [{"role": ..., "content": ...}, ...] (the TRL / HF hub
  conversational shape); the loss is on every assistant turn.
- ``prompt-completion``: ``prompt`` and ``completion`` columns, either strings (rendered as one
  user turn and one assistant turn with the model's chat template) or message lists (TRL's
  conversational prompt-completion); the loss is on the completion only.

Every problem raises :class:`DataError` with one line naming the file, the row and the fix.
The files are read without leaving a copy behind (``datasets`` caches into a temporary folder
that is deleted afterwards): the data never leaves the site and is not duplicated on it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.data import LETTERS, ROLES, Conversation, Question
from training.errors import DataError

FILE_TYPES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
KINDS = ("mc", "chat", "prompt-completion")
DEFAULT_COLUMNS: dict[str, dict[str, Any]] = {
    "mc": {"question": "question", "options": "options", "answer": "answer", "id": ""},
    "chat": {"messages": "messages", "id": ""},
    "prompt-completion": {"prompt": "prompt", "completion": "completion", "id": ""},
}


def read_table(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a JSONL/JSON/CSV/Parquet file, via ``datasets``."""
    p = Path(path)
    builder = FILE_TYPES.get(p.suffix.lower())
    if builder is None:
        raise DataError(f"{p}: unknown file type {p.suffix!r}; use .jsonl, .json, .csv or .parquet")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0 or (builder != "parquet" and not p.read_bytes().strip()):
        raise DataError(f"{p}: the file is empty; point [data] at a file with rows")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="medfed-data-") as cache:
        try:
            ds = datasets.load_dataset(builder, data_files=str(p), split="train", cache_dir=cache)
        except Exception as exc:  # pyarrow/datasets errors: say which file and what
            msg = " ".join(str(exc).split())[:300]
            raise DataError(f"{p}: cannot be read as {builder} ({type(exc).__name__}: {msg})") from None
        rows = [dict(r) for r in ds]
        columns = list(ds.column_names)
    if not rows:
        raise DataError(f"{p}: the file has no rows; point [data] at a file with rows")
    return rows, columns


def _need(p: Path, columns: Sequence[str], wanted: Sequence[str], kind: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"{p}: no column {missing[0]!r} for format {kind!r} "
            f"(the file has: {', '.join(columns) or 'none'}); "
            f'name the right one with columns = {{ ... = "<column>" }} in [data]'
        )


def _str(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} missing or not a non-empty string (got {_short(value)})")
    return value.strip()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _options(row: Mapping[str, Any], spec: Any, where: str) -> tuple[str, ...]:
    if isinstance(spec, list | tuple):  # one column per option
        opts = [row.get(c) for c in spec]
    else:
        value = row.get(spec)
        if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise DataError(f"{where}: options cell is not a valid JSON list or object") from None
        if isinstance(value, Mapping):
            letters = sorted(k for k in value if value[k] is not None)
            if tuple(letters) != LETTERS[: len(letters)]:
                raise DataError(f"{where}: option letters {letters} are not A, B, C, ... in sequence")
            opts = [value[k] for k in letters]
        elif isinstance(value, list | tuple):
            opts = list(value)
        else:
            raise DataError(
                f"{where}: options must be a list or {{letter: text}} object, got {_short(value)}"
            )
    if not 2 <= len(opts) <= len(LETTERS):
        raise DataError(f"{where}: {len(opts)} options; a question needs 2 to {len(LETTERS)}")
    return tuple(_str(o, where, f"option {LETTERS[i]}") for i, o in enumerate(opts))


def _answer(value: Any, options: tuple[str, ...], base: int, where: str) -> int:
    letters = LETTERS[: len(options)]
    idx: int | None = None
    if isinstance(value, bool) or value is None:
        idx = None
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        idx = int(value) - base
    elif isinstance(value, str):
        v = value.strip()
        if v.upper() in letters and len(v) == 1:
            idx = letters.index(v.upper())
        elif v.lstrip("-").isdigit():
            idx = int(v) - base
        elif v in options:
            idx = options.index(v)
    if idx is None or not 0 <= idx < len(options):
        raise DataError(
            f"{where}: answer {_short(value)} is not among the options (a letter {letters[0]}-{letters[-1]}, "
            f"an option's text, or an index counted from {base}); fix the row or set answer_base"
        )
    return idx


def _row_id(row: Mapping[str, Any], id_col: str, p: Path, i: int, where: str) -> str:
    if not id_col:
        return f"{p.name}/{i + 1}"
    value = row.get(id_col)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: id column {id_col!r} is empty")
    return f"{p.name}/{value}"


def _messages(value: Any, where: str, what: str) -> list[tuple[str, str]]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: {what} is not a valid JSON list of messages") from None
    if not isinstance(value, list | tuple) or not value:
        raise DataError(f"{where}: {what} must be a non-empty list of {{role, content}} messages")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f'{where}: {what}[{j}] is not a {{"role": ..., "content": ...}} message')
        role = m["role"]
        if role not in ROLES:
            raise DataError(f"{where}: {what}[{j}] has role {_short(role)}; use one of {', '.join(ROLES)}")
        content = m["content"]
        if not isinstance(content, str):
            raise DataError(f"{where}: {what}[{j}] content must be a string")
        out.append((str(role), content))
    return out


def load_table_records(
    path: str | os.PathLike[str],
    kind: str,
    columns: Mapping[str, Any] | None = None,
    answer_base: int = 0,
    language: str = "en",
) -> list[Question] | list[Conversation]:
    """Load ``path`` as records of ``kind`` (``mc``, ``chat`` or ``prompt-completion``)."""
    if kind not in KINDS:
        raise DataError(f"unknown format {kind!r}; one of {', '.join(KINDS)}")
    p = Path(path)
    cols = {**DEFAULT_COLUMNS[kind], **dict(columns or {})}
    unknown = sorted(set(cols) - set(DEFAULT_COLUMNS[kind]))
    if unknown:
        raise DataError(
            f"columns.{unknown[0]} means nothing for format {kind!r}; "
            f"it takes {', '.join(sorted(DEFAULT_COLUMNS[kind]))}"
        )
    rows, names = read_table(p)
    wanted = [v for k, v in cols.items() if k != "id" and isinstance(v, str)]
    if isinstance(cols.get("options"), list | tuple):
        wanted += list(cols["options"])
    if cols.get("id"):
        wanted.append(cols["id"])
    _need(p, names, wanted, kind)
    source = p.stem
    seen: set[str] = set()
    questions: list[Question] = []
    convs: list[Conversation] = []
    for i, row in enumerate(rows):
        where = f"{p} row {i + 1}"
        rid = _row_id(row, str(cols.get("id") or ""), p, i, where)
        if rid in seen:
            raise DataError(f"{where}: duplicate id {rid!r}; ids must be unique")
        seen.add(rid)
        if kind == "mc":
            opts = _options(row, cols["options"], where)
            questions.append(
                Question(
                    id=rid,
                    source=source,
                    language=language,
                    question=_str(row.get(cols["question"]), where, f"question ({cols['question']!r})"),
                    options=opts,
                    answer=_answer(row.get(cols["answer"]), opts, answer_base, where),
                )
            )
            continue
        if kind == "chat":
            msgs = _messages(row.get(cols["messages"]), where, cols["messages"])
            start = 0
        else:
            prompt, completion = row.get(cols["prompt"]), row.get(cols["completion"])
            if isinstance(prompt, str) and isinstance(completion, str):
                msgs = [
                    ("user", _str(prompt, where, "prompt")),
                    ("assistant", _str(completion, where, "completion")),
                ]
                start = 1
            else:
                head = _messages(prompt, where, cols["prompt"])
                msgs = head + _messages(completion, where, cols["completion"])
                start = len(head)
        if not any(role == "assistant" for role, _ in msgs[start:]):
            raise DataError(f"{where}: no assistant message to learn from; add the reply as role 'assistant'")
        convs.append(Conversation(rid, source, tuple(msgs), start))
    return questions if kind == "mc" else convs
