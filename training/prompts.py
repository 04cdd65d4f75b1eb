"""Multiple-choice prompts in the question's language (the target is the answer letter, or the
correct option's text given the question alone), and chat examples for supervised fine-tuning
(the target is the assistant replies).

With a chat template the question is the user turn and the answer letter is the first token of the
assistant turn; without one the prompt ends with an "Answer:" line. The token ids of prompt and
letter are concatenated (never re-tokenized together) so training and evaluation score the same
token at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.data import LETTERS, Conversation, Question
from training.errors import DataError

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


CLOZE_INSTRUCTIONS = {
    "en": "Answer the following medical exam question.",
    "zh": "请回答下面的医学考试题。",
}
_ANSWER_ROOM = 4  # an answer text never takes more than 1/4 of ``max_length`` (options are short)


def cloze_text(q: Question) -> str:
    """The user message of the answer-text format: instruction and question, no options."""
    return f"{CLOZE_INSTRUCTIONS.get(q.language, CLOZE_INSTRUCTIONS['en'])}\n\n{q.question}"


def encode_answer_text(q: Question, tokenizer: Any, max_length: int, option: int | None = None) -> Example:
    """The question without its options as the prompt, an option's text (default: the correct
    one) as the reply; labels only on the reply's text tokens (no end-of-turn token).

    Training on ``target="text"`` and :func:`training.evaluate.answer_nll` use this same encoding,
    so the metric scores exactly the tokens training puts its loss on.
    """
    k = q.answer if option is None else option
    prompt_str = _render(tokenizer, [{"role": "user", "content": cloze_text(q)}], True)
    prompt = list(tokenizer(prompt_str, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if not has_chat_template(tokenizer) and bos is not None:
        prompt = [int(bos), *prompt]
    target = list(tokenizer(q.options[k], add_special_tokens=False)["input_ids"])
    if not target:
        raise DataError(f"{q.id}: option {LETTERS[k]} renders to no tokens")
    target = target[: max(1, max_length // _ANSWER_ROOM)]
    prompt = fit(prompt, max_length - len(target))
    return Example(tuple(prompt + target), tuple([IGNORE_INDEX] * len(prompt) + target))


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if has_chat_template(tokenizer):
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        )
    # no template: a plain transcript; the end-of-sequence token closes each assistant turn
    eos = tokenizer.eos_token or ""
    text = "".join(
        f"{m['role']}: {m['content']}{eos if m['role'] == 'assistant' else ''}\n" for m in messages
    )
    return text + ("assistant: " if generation_prompt else "")


def conversation_segments(c: Conversation, tokenizer: Any) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) pieces: the model's chat template applied turn by
    turn; trained pieces are the assistant turns at index >= ``c.train_from`` (reply + end of turn)."""
    msgs = [{"role": r, "content": t} for r, t in c.messages]
    full = _render(tokenizer, msgs, False)
    pieces: list[tuple[str, bool]] = []
    done = 0  # characters of ``full`` already assigned to a piece
    for k, (role, _) in enumerate(c.messages):
        if role != "assistant" or k < c.train_from:
            continue
        before = _render(tokenizer, msgs[:k], True)
        upto = _render(tokenizer, msgs[: k + 1], False)
        if not upto.startswith(before) or not full.startswith(upto) or len(before) < done:
            raise DataError(
                f"{c.id}: the model's chat template does not render this conversation turn by turn "
                "(a later turn changes earlier text); use a model whose template appends turns"
            )
        pieces += [(full[done : len(before)], False), (full[len(before) : len(upto)], True)]
        done = len(upto)
    pieces.append((full[done:], False))
    return [(text, trained) for text, trained in pieces if text]


def encode_conversation(c: Conversation, tokenizer: Any, max_length: int) -> Example:
    """Token ids of a chat example, loss only on the trained assistant turns, at most ``max_length``.

    Each piece is tokenized on its own (training and evaluation see the same ids). A conversation
    longer than ``max_length`` keeps a window that starts before its first trained token."""
    ids: list[int] = []
    labels: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    first = True
    for text, trained in conversation_segments(c, tokenizer):
        toks = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if first and not has_chat_template(tokenizer) and bos is not None:
            toks = [int(bos), *toks]
        first = False
        ids += toks
        labels += toks if trained else [IGNORE_INDEX] * len(toks)
    if not any(label != IGNORE_INDEX for label in labels):
        raise DataError(f"{c.id}: the assistant reply renders to no tokens; it cannot be learned")
    if len(ids) > max_length:
        first_target = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        start = max(0, min(first_target - max_length // 2, len(ids) - max_length))
        ids, labels = ids[start : start + max_length], labels[start : start + max_length]
        labels[0] = IGNORE_INDEX  # nothing predicts the first token of the window
    return Example(tuple(ids), tuple(labels))


TARGETS = ("letter", "text")


def encode_record(
    record: Question | Conversation, tokenizer: Any, max_length: int, target: str = "letter"
) -> Example:
    """A multiple-choice question or a conversation as a training example; a question's ``target``
    is its answer letter (``letter``) or its correct option's text given the question alone (``text``)."""
    if isinstance(record, Conversation):
        return encode_conversation(record, tokenizer, max_length)
    if target == "text":
        return encode_answer_text(record, tokenizer, max_length)
    if target != "letter":
        raise ValueError(f"unknown training target {target!r}; choose from {', '.join(TARGETS)}")
    return encode_example(record, tokenizer, max_length)
