"""This site's private data, assembled from the [data] section (it never leaves the machine).

Training and held-out rows are multiple-choice questions (the three known sources, MedQA/MedMCQA
files, or any table with configurable columns) or chat conversations (``messages`` or
``prompt``/``completion`` tables). One site uses one kind; every check runs before any training.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from node.config import TABLE_FORMATS, DataFile, NodeConfig
from node.errors import ConfigError
from training.data import (
    Record,
    fingerprint,
    hash_fraction,
    kind_of,
    load_medmcqa,
    load_medqa,
    load_source,
    split_by_hash,
)

PART_SALT = "medfed-node-part-v1"
SHARD_SALT = "medfed-node-shard-v1"
log = logging.getLogger("medfed.data")


@dataclass(frozen=True)
class SiteData:
    """Training rows and held-out evaluation rows (disjoint by id and by text), all of one kind."""

    name: str
    train: tuple[Record, ...]
    eval: tuple[Record, ...]

    @property
    def kind(self) -> str:
        """``"mc"`` (multiple choice: accuracy) or ``"sft"`` (chat: held-out loss)."""
        return kind_of(self.train[0])

    @property
    def eval_set_hash(self) -> str:
        """sha256 over the evaluation row ids: says on-chain which set a metric is about."""
        h = hashlib.sha256()
        for q in self.eval:
            h.update(q.id.encode() + b"\n")
        return h.hexdigest()

    def round_window(self, round: int, per_round: int) -> list[Record]:
        """The training rows for a round: a rotating window of ``per_round`` (0 = all)."""
        if per_round <= 0 or per_round >= len(self.train):
            return list(self.train)
        start = ((round - 1) * per_round) % len(self.train)
        rows = list(self.train[start : start + per_round])
        if len(rows) < per_round:
            rows += list(self.train[: per_round - len(rows)])
        return rows


def _load_one(cfg: NodeConfig, f: DataFile, section: str, index: int) -> Sequence[Record]:
    rows: Sequence[Record]
    try:
        if f.source:
            rows = load_source(f.source, f.split)
        else:
            path = cfg.resolve(f.path)
            if not path.is_file():
                raise ConfigError(f"{cfg.path.name}: [data] {section}[{index}].path: {path} does not exist")
            if f.format in TABLE_FORMATS:
                from training.formats import load_table_records

                rows = load_table_records(path, f.format, dict(f.columns), f.answer_base, f.language)
            elif f.format == "medmcqa":
                rows = load_medmcqa(path)
            else:
                rows = load_medqa(path, path.stem)
    except ConfigError:
        raise
    except Exception as exc:  # DataError names file and row
        raise ConfigError(f"{cfg.path.name}: [data] {section}[{index}] ({f.describe()}): {exc}") from None
    if f.part != "all":
        train, held = split_by_hash(rows, f.eval_fraction, PART_SALT)  # type: ignore[arg-type]
        rows = train if f.part == "train" else held
    if f.shard:
        k, n = (int(x) for x in f.shard.split("/"))
        rows = [q for q in rows if int(hash_fraction(q.id, SHARD_SALT) * n) == k - 1]
    return rows


def load_site_data(cfg: NodeConfig) -> SiteData:
    """Load and check the configured data; ConfigError if it is missing, malformed, empty, mixes
    kinds, or if held-out rows repeat training rows (same id, or the same text under another id)."""
    name = cfg.path.name
    train: list[Record] = []
    held: list[Record] = []
    for i, f in enumerate(cfg.data.train):
        train += _load_one(cfg, f, "train", i)
    for i, f in enumerate(cfg.data.eval):
        held += _load_one(cfg, f, "eval", i)
    if not train:
        raise ConfigError(f"{name}: [data] train: selects no rows; check the file, source/split/shard")
    if not held:
        raise ConfigError(f"{name}: [data] eval: selects no rows; check the file, source/split/shard")
    kinds = {kind_of(r) for r in train + held}
    if len(kinds) > 1:
        raise ConfigError(
            f"{name}: [data] mixes multiple-choice and chat data; train and eval must be one kind "
            "(all mc/medqa/medmcqa, or all chat/prompt-completion)"
        )
    train_ids = {q.id for q in train}
    overlap = [q.id for q in held if q.id in train_ids]
    if overlap:
        raise ConfigError(
            f"{name}: [data] eval shares {len(overlap)} row(s) with train (e.g. {overlap[0]}); "
            "evaluate on held-out rows only"
        )
    train_prints = {fingerprint(q) for q in train}
    same_text = [q for q in held if fingerprint(q) in train_prints]
    own = [q for q in same_text if not _known_source(q)]
    if own:
        raise ConfigError(
            f"{name}: [data] eval repeats the text of {len(own)} training row(s) "
            f"(e.g. eval row {own[0].id}); "
            "remove them from the held-out file so evaluation measures unseen rows"
        )
    if same_text:  # the published sets themselves repeat some questions across splits: drop them
        log.warning("dropping %d held-out questions whose text also appears in training", len(same_text))
        dropped = {q.id for q in same_text}
        held = [q for q in held if q.id not in dropped]
    if cfg.data.eval_limit:
        held = held[: cfg.data.eval_limit]
    return SiteData(cfg.data.name, tuple(train), tuple(held))


def _known_source(record: Record) -> bool:
    return record.source in ("medqa-us", "medqa-mainland", "medmcqa")
