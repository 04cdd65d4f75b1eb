"""A site's own data: every kind and file type loads, malformed data gives one clear line before any
training, SFT learns on the replies only, and the reported figure says which metric it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.config import TEMPLATE, load_config
from node.data import load_site_data
from node.errors import ConfigError
from node.metric_report import Figures, decode_report, report_values
from training.data import Conversation, Question
from training.models import build_tiny_tokenizer
from training.prompts import IGNORE_INDEX, encode_conversation

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _rows_mc(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"q": f"Which organ {i}?", "choices": ["heart", "lung", f"liver {i}", "skin"], "label": "C", "qid": i}
        for i in range(start, start + n)
    ]


def _chat(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are a clinical assistant."},
                {"role": "user", "content": f"Dose of drug {i}?"},
                {"role": "assistant", "content": f"{i} mg twice daily."},
            ]
        }
        for i in range(start, start + n)
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows in the format the suffix says (jsonl, json, csv, parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows)
        if path.suffix == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, str(path))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, str(path))
    return path


def _config(tmp_path: Path, train: str, eval_: str) -> Path:
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    text = text.replace('train = [{ source = "medqa-us", split = "dev" }]', f"train = [{train}]")
    text = text.replace('eval = [{ source = "medqa-us", split = "test" }]', f"eval = [{eval_}]")
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return p


def _site(tmp_path: Path, train: str, eval_: str) -> Any:
    return load_site_data(load_config(_config(tmp_path, train, eval_)))


MC_COLS = 'columns = { question = "q", options = "choices", answer = "label", id = "qid" }'


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_multiple_choice_with_configured_columns_in_each_file_type(tmp_path: Path, suffix: str) -> None:
    _write(tmp_path / f"mine/train{suffix}", _rows_mc(6))
    _write(tmp_path / f"mine/test{suffix}", _rows_mc(3, start=100))
    site = _site(
        tmp_path,
        f'{{ path = "mine/train{suffix}", format = "mc", {MC_COLS} }}',
        f'{{ path = "mine/test{suffix}", format = "mc", {MC_COLS} }}',
    )
    assert site.kind == "mc" and len(site.train) == 6 and len(site.eval) == 3
    q = site.eval[0]
    assert isinstance(q, Question)
    assert q.question == "Which organ 100?" and q.options[2] == "liver 100" and q.answer == 2
    assert q.id == f"test{suffix}/100"


def test_csv_with_one_column_per_option_and_one_based_answers(tmp_path: Path) -> None:
    rows = [{"stem": f"Q{i}?", "a": "x", "b": f"y{i}", "c": "z", "cop": 2} for i in range(5)]
    _write(tmp_path / "t.csv", rows)
    _write(tmp_path / "e.csv", [{**r, "stem": r["stem"] + " (held out)"} for r in rows[:2]])
    cols = 'columns = { question = "stem", options = ["a", "b", "c"], answer = "cop" }, answer_base = 1'
    site = _site(
        tmp_path,
        f'{{ path = "t.csv", format = "mc", {cols} }}',
        f'{{ path = "e.csv", format = "mc", {cols} }}',
    )
    assert [q.answer for q in site.train] == [1] * 5 and site.train[3].options == ("x", "y3", "z")


def test_answer_given_as_the_option_text(tmp_path: Path) -> None:
    rows = [{"question": f"Q{i}", "options": {"A": "yes", "B": f"no{i}"}, "answer": "yes"} for i in range(3)]
    _write(tmp_path / "t.jsonl", rows)
    _write(tmp_path / "e.jsonl", [{**r, "question": r["question"] + "?"} for r in rows])
    site = _site(tmp_path, '{ path = "t.jsonl", format = "mc" }', '{ path = "e.jsonl", format = "mc" }')
    assert all(q.answer == 0 for q in site.train + site.eval)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_chat_messages(tmp_path: Path, suffix: str) -> None:
    _write(tmp_path / f"chat{suffix}", _chat(5))
    _write(tmp_path / f"held{suffix}", _chat(2, start=50))
    site = _site(
        tmp_path,
        f'{{ path = "chat{suffix}", format = "chat" }}',
        f'{{ path = "held{suffix}", format = "chat" }}',
    )
    assert site.kind == "sft" and len(site.train) == 5
    c = site.eval[1]
    assert isinstance(c, Conversation)
    assert c.messages[-1] == ("assistant", "51 mg twice daily.") and c.train_from == 0


def test_prompt_completion_strings_and_conversational(tmp_path: Path) -> None:
    _write(
        tmp_path / "pc.csv",
        [{"prompt": f"Summarise note {i}", "completion": f"Summary {i}."} for i in range(4)],
    )
    conv = [
        {
            "prompt": [
                {"role": "user", "content": f"Hi {i}"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Triage?"},
            ],
            "completion": [{"role": "assistant", "content": f"Level {i}."}],
        }
        for i in range(3)
    ]
    _write(tmp_path / "pc.jsonl", conv)
    site = _site(
        tmp_path,
        '{ path = "pc.csv", format = "prompt-completion" }',
        '{ path = "pc.jsonl", format = "prompt-completion" }',
    )
    first = site.train[0]
    assert isinstance(first, Conversation)
    assert (
        first.messages == (("user", "Summarise note 0"), ("assistant", "Summary 0."))
        and first.train_from == 1
    )
    held = site.eval[2]
    assert (
        isinstance(held, Conversation)
        and held.train_from == 3
        and held.messages[-1] == ("assistant", "Level 2.")
    )


def test_sft_loss_is_on_the_replies_only_with_the_models_chat_template() -> None:
    tok = build_tiny_tokenizer()
    c = Conversation(
        "x/1",
        "x",
        (("user", "hi"), ("assistant", "first reply"), ("user", "more"), ("assistant", "second")),
        train_from=2,  # prompt/completion: the first assistant turn is context, not a target
    )
    ex = encode_conversation(c, tok, 512)
    trained = tok.decode(
        [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert trained == "second</s>\n"
    assert tok.decode(list(ex.input_ids)) == tok.apply_chat_template(
        [{"role": r, "content": t} for r, t in c.messages], tokenize=False
    )
    whole = encode_conversation(Conversation("x/2", "x", c.messages), tok, 512)
    trained = tok.decode(
        [t for t, label in zip(whole.input_ids, whole.labels, strict=True) if label != IGNORE_INDEX]
    )
    assert trained == "first reply</s>\nsecond</s>\n"
    cut = encode_conversation(Conversation("x/3", "x", (("user", "w " * 400), ("assistant", "ok"))), tok, 64)
    assert len(cut.input_ids) == 64 and cut.labels[0] == IGNORE_INDEX
    assert any(label != IGNORE_INDEX for label in cut.labels)


@pytest.mark.parametrize(
    ("train_rows", "eval_rows", "train_spec", "pattern"),
    [
        (
            _rows_mc(3),
            _rows_mc(2, 9),
            '{ path = "t.jsonl", format = "mc" }',
            r"no column 'question' .*the file has: q, choices, label, qid",
        ),
        (
            [],
            _rows_mc(2, 9),
            f'{{ path = "t.jsonl", format = "mc", {MC_COLS} }}',
            r"t.jsonl: the file is empty",
        ),
        (
            [{**r, "label": "E"} for r in _rows_mc(3)],
            _rows_mc(2, 9),
            f'{{ path = "t.jsonl", format = "mc", {MC_COLS} }}',
            r"t.jsonl row 1: answer 'E' is not among the options",
        ),
        (
            [{**r, "label": 7} for r in _rows_mc(3)],
            _rows_mc(2, 9),
            f'{{ path = "t.jsonl", format = "mc", {MC_COLS} }}',
            r"answer 7 is not among the options",
        ),
        (
            _rows_mc(3),
            _rows_mc(2, 1),
            '{ path = "t.jsonl", format = "mc", '
            'columns = { question = "q", options = "choices", answer = "label" } }',
            r"eval repeats the text of 2 training row\(s\)",
        ),
        (
            _chat(3),
            _chat(2, 9),
            '{ path = "t.jsonl", format = "mc", columns = { question = "messages" } }',
            r"no column 'choices'|no column 'options'",
        ),
        (
            [{"messages": [{"role": "user", "content": "hi"}]}],
            _chat(2, 9),
            '{ path = "t.jsonl", format = "chat" }',
            r"no assistant message to learn from",
        ),
        (
            [{"messages": [{"role": "doctor", "content": "hi"}]}],
            _chat(2, 9),
            '{ path = "t.jsonl", format = "chat" }',
            r"has role 'doctor'",
        ),
        (
            _chat(3),
            _rows_mc(2, 9),
            '{ path = "t.jsonl", format = "chat" }',
            r"mixes multiple-choice and chat data",
        ),
    ],
)
def test_malformed_data_gets_one_clear_line(
    tmp_path: Path,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    train_spec: str,
    pattern: str,
) -> None:
    t = tmp_path / "t.jsonl"
    t.write_text("") if not train_rows else _write(t, train_rows)
    _write(tmp_path / "e.jsonl", eval_rows)
    eval_spec = (
        '{ path = "e.jsonl", format = "chat" }'
        if "messages" in eval_rows[0]
        else f'{{ path = "e.jsonl", format = "mc", {MC_COLS} }}'
    )
    with pytest.raises(ConfigError, match=pattern) as err:
        _site(tmp_path, train_spec, eval_spec)
    assert "\n" not in str(err.value) and str(err.value).startswith("medfed.toml: [data]")


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    _write(tmp_path / "e.jsonl", _chat(1))
    with pytest.raises(ConfigError, match=r"unknown file type '.xlsx'; use .jsonl, .json, .csv or .parquet"):
        _site(tmp_path, '{ path = "t.xlsx", format = "chat" }', '{ path = "e.jsonl", format = "chat" }')
    with pytest.raises(ConfigError, match=r"does not exist"):
        _site(tmp_path, '{ path = "nope.jsonl", format = "chat" }', '{ path = "e.jsonl", format = "chat" }')


def test_config_rejects_columns_for_known_formats(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\[0\].columns: only for format mc, chat, prompt-completion"):
        load_config(
            _config(
                tmp_path,
                '{ path = "x.jsonl", format = "medqa", columns = { question = "q" } }',
                '{ source = "medqa-us", split = "test" }',
            )
        )


def test_reported_figures_say_which_metric_they_are() -> None:
    set_hash = "ab" * 32
    mc = Figures("mc", 50, accuracy=0.28, nll=1.3863)
    h, ppm = report_values(mc, set_hash)
    assert ppm == 280_000
    got = decode_report(h, ppm)
    assert got["kind"] == "mc" and got["value"] == 0.28 and got["aux"] == pytest.approx(1.3863, abs=1e-6)
    sft = Figures("sft", 20, loss=5.4321)
    h, ppm = report_values(sft, set_hash)
    assert 0 < ppm < 10_000  # 1e6 / perplexity: within the contract's cap, higher is better
    got = decode_report("0x" + h, ppm)
    assert got["kind"] == "sft" and got["label"] == "held-out loss"
    assert got["value"] == pytest.approx(5.4321, abs=1e-6) and got["aux"] == pytest.approx(228.66, rel=1e-3)
    assert got["set"] == "ab" * 23
    legacy = decode_report(set_hash, 250_000)  # an older node's plain set hash: an accuracy
    assert legacy["kind"] == "accuracy" and legacy["value"] == 0.25
