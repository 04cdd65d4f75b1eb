"""Multiple-choice prompts in the question's language; the target is the answer letter.

With a chat template the question is the user turn and the answer letter is the first token of the
assistant turn; without one the prompt ends with an "Answer:" line. The token ids of prompt and
letter are concatenated (never re-tokenized together) so training and evaluation score the same
token at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.data import LETTERS, Question

IGNORE_INDEX = -100
_HEAD_KEEP = 48  # tokens kept from the start (template header + instruction) when truncating

INSTRUCTIONS = {
    "en": (
        "Answer the following multiple-choice medical exam question. "
        "Reply with the letter of the correct option only.",
        "Answer with one letter: {letters}.",
        "Answer:",
    ),
    "zh": (
        "请回答下面的医学考试单项选择题，只回答正确选项的字母。",
        "请只回答一个字母：{letters}。",
        "答案：",
    ),
}


def prompt_text(q: Question) -> str:
    """The user message: instruction, question, lettered options, answer instruction."""
    head, tail, _ = INSTRUCTIONS.get(q.language, INSTRUCTIONS["en"])
    letters = LETTERS[: len(q.options)]
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, q.options, strict=True))
    sep = "、" if q.language == "zh" else ", "
    return f"{head}\n\n{q.question}\n\n{options}\n\n{tail.format(letters=sep.join(letters))}"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(q: Question, tokenizer: Any) -> list[int]:
    """Token ids of the full prompt, up to where the answer letter goes."""
    text = prompt_text(q)
    if has_chat_template(tokenizer):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    answer_cue = INSTRUCTIONS.get(q.language, INSTRUCTIONS["en"])[2]
    return list(tokenizer(f"{text}\n{answer_cue}\n", add_special_tokens=True)["input_ids"])


def letter_ids(tokenizer: Any, n: int = 4) -> list[int]:
    """The first token id of each answer letter A, B, ... (the scored and trained token)."""
    ids = []
    for letter in LETTERS[:n]:
        toks = tokenizer(letter, add_special_tokens=False)["input_ids"]
        ids.append(int(toks[0]))
    if len(set(ids)) != n:
        raise ValueError("tokenizer maps two answer letters to the same first token")
    return ids


def answer_ids(q: Question, tokenizer: Any) -> list[int]:
    """Token ids of the answer letter (the training target)."""
    return list(tokenizer(LETTERS[q.answer], add_special_tokens=False)["input_ids"])


def fit(ids: list[int], room: int) -> list[int]:
    """Cut the middle of an over-long prompt (keeps header and the options/answer cue at the end)."""
    if len(ids) <= room:
        return ids
    head = min(_HEAD_KEEP, room // 4)
    return ids[:head] + ids[len(ids) - (room - head) :]


@dataclass(frozen=True)
class Example:
    """A tokenized training example; ``labels`` is IGNORE_INDEX except on the answer tokens."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def encode_example(q: Question, tokenizer: Any, max_length: int) -> Example:
    """Prompt + answer letter tokens, loss only on the answer tokens, at most ``max_length`` long."""
    target = answer_ids(q, tokenizer)
    prompt = fit(prompt_ids(q, tokenizer), max_length - len(target))
    return Example(tuple(prompt + target), tuple([IGNORE_INDEX] * len(prompt) + target))
