"""Prompts: language, chat template use, answer-only labels."""

from __future__ import annotations

from typing import Any

from training.data import Question
from training.models import build_tiny_tokenizer
from training.prompts import IGNORE_INDEX, encode_example, letter_ids, prompt_ids, prompt_text

Q_ZH = Question("x/1", "medqa-mainland", "zh", "男，50岁。诊断是？", ("甲", "乙", "丙", "丁"), 2)
Q_EN = Question("x/2", "medqa-us", "en", "Which drug?", ("w", "x", "y", "z"), 1)


def test_prompt_is_in_the_question_language_and_lists_options() -> None:
    zh = prompt_text(Q_ZH)
    assert "请回答" in zh and "C. 丙" in zh and "Answer" not in zh
    en = prompt_text(Q_EN)
    assert en.startswith("Answer the following") and "B. x" in en and "D. z" in en


def test_labels_cover_only_the_answer_letter(tiny: Any) -> None:
    _, tok = tiny
    ex = encode_example(Q_EN, tok, max_length=512)
    targets = [t for t in ex.labels if t != IGNORE_INDEX]
    assert targets == [letter_ids(tok, 4)[1]]
    assert ex.labels[-1] == ex.input_ids[-1] and len(ex.labels) == len(ex.input_ids)
    assert tok.decode(list(ex.input_ids)).endswith("<s>assistant\nB")  # the tiny model's chat template
    plain = build_tiny_tokenizer()
    plain.chat_template = None  # a model without a template: the prompt ends with an answer cue
    assert plain.decode(list(encode_example(Q_EN, plain, max_length=512).input_ids)).endswith("Answer:\nB")


def test_chat_template_is_used_when_present_and_long_prompts_are_cut() -> None:
    tok = build_tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    text = tok.decode(prompt_ids(Q_ZH, tok))
    assert text.startswith("<|user|>请回答") and text.endswith("<|assistant|>")
    long_q = Question("x/3", "medqa-us", "en", "word " * 500, ("a", "b"), 0)
    ex = encode_example(long_q, tok, max_length=200)
    assert len(ex.input_ids) == 200
    assert tok.decode(list(ex.input_ids)).endswith("<|assistant|>A")
