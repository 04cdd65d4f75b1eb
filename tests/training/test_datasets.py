"""Dataset loaders on the real files, bad rows, the hash split and partitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import (
    MEDMCQA_EVAL_FRACTION,
    Question,
    default_data_dir,
    load_medmcqa,
    load_medqa,
    load_source,
    partition_iid,
    partition_non_iid,
    split_by_hash,
)
from training.errors import DataError


@pytest.mark.parametrize(
    ("source", "split", "rows"),
    [
        ("medqa-us", "dev", 1272),
        ("medqa-us", "test", 1273),
        ("medqa-mainland", "dev", 3425),
        ("medqa-mainland", "test", 3426),
    ],
)
def test_medqa_row_counts_match_the_data_readme(source: str, split: str, rows: int) -> None:
    questions = load_source(source, split)
    assert len(questions) == rows
    assert all(len(q.options) == 4 and 0 <= q.answer < 4 for q in questions)
    assert len({q.id for q in questions}) == rows
    assert {q.language for q in questions} == {"zh" if source == "medqa-mainland" else "en"}


def test_medmcqa_split_is_disjoint_covers_the_file_and_is_about_20_percent() -> None:
    train = load_source("medmcqa", "train")
    held = load_source("medmcqa", "eval")
    assert len(train) + len(held) == 4183
    assert not {q.id for q in train} & {q.id for q in held}
    assert abs(len(held) / 4183 - MEDMCQA_EVAL_FRACTION) < 0.02
    assert [q.id for q in held] == [q.id for q in load_source("medmcqa", "eval")]


def test_medmcqa_cop_is_converted_from_one_based(tmp_path: Path) -> None:
    row = {"id": "x1", "question": "q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "x2", "cop": 4}) + "\n")
    assert [q.answer for q in load_medmcqa(path)] == [0, 3]
    first = load_source("medmcqa", "train")[0]
    assert 0 <= first.answer <= 3 and first.options[0]


def test_medqa_answer_idx_maps_to_the_answer_text() -> None:
    path = default_data_dir() / "medqa-us" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:50]]
    questions = load_medqa(path, "medqa-us")[:50]
    for row, q in zip(rows, questions, strict=True):
        assert q.options[q.answer] == row["answer"].strip()


GOOD = {"question": "q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({**GOOD, "answer_idx": "E"}), "answer_idx"),
        (json.dumps({**GOOD, "question": ""}), "'question'"),
        (json.dumps({**GOOD, "options": {"A": "a", "C": "c"}}), "option letters"),
        (json.dumps([1, 2]), "JSON object"),
    ],
)
def test_malformed_medqa_row_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"dev\.jsonl:2: .*{reason}"):
        load_medqa(path, "medqa-us")


@pytest.mark.parametrize("cop", [0, 5, "2", None])
def test_malformed_medmcqa_cop_is_rejected(tmp_path: Path, cop: object) -> None:
    row = {"id": "x1", "question": "q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": cop}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"dev\.json:1: cop"):
        load_medmcqa(path)


def test_unknown_source_and_split_and_missing_dir_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown source"):
        load_source("pubmedqa", "dev")
    with pytest.raises(DataError, match="no split 'train'"):
        load_source("medqa-us", "train")
    with pytest.raises(DataError, match="MEDFED_DATA_DIR"):
        load_source("medqa-us", "dev", data_dir=tmp_path)


def test_data_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "medqa-us").mkdir()
    (tmp_path / "medqa-us" / "test.jsonl").write_text(json.dumps(GOOD) + "\n")
    monkeypatch.setenv("MEDFED_DATA_DIR", str(tmp_path))
    assert [q.answer for q in load_source("medqa-us", "test")] == [1]


def _q(i: int, source: str = "s") -> Question:
    return Question(f"{source}/{i}", source, "en", f"q{i}", ("a", "b"), 0)


def test_split_by_hash_depends_on_salt_not_order() -> None:
    records = [_q(i) for i in range(400)]
    train, held = split_by_hash(records, 0.25, "salt")
    train2, held2 = split_by_hash(list(reversed(records)), 0.25, "salt")
    assert {q.id for q in held} == {q.id for q in held2} and {q.id for q in train} == {q.id for q in train2}
    assert 60 < len(held) < 140
    _, other = split_by_hash(records, 0.25, "other salt")
    assert {q.id for q in other} != {q.id for q in held}
    with pytest.raises(DataError):
        split_by_hash(records, 1.0, "salt")


def test_partitions() -> None:
    records = [_q(i, "b") for i in range(5)] + [_q(i, "a") for i in range(3)]
    groups = partition_non_iid(records)
    assert list(groups) == ["a", "b"] and [len(v) for v in groups.values()] == [3, 5]
    shards = partition_iid(records, 3, seed=7)
    assert sorted(len(s) for s in shards) == [2, 3, 3]
    assert sorted(q.id for s in shards for q in s) == sorted(q.id for q in records)
    assert shards == partition_iid(records, 3, seed=7)
    assert shards != partition_iid(records, 3, seed=8)
