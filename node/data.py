"""This site's private data, assembled from the [data] section (it never leaves the machine)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from node.config import DataFile, NodeConfig
from node.errors import ConfigError
from training.data import Question, hash_fraction, load_medmcqa, load_medqa, load_source, split_by_hash

PART_SALT = "medfed-node-part-v1"
SHARD_SALT = "medfed-node-shard-v1"


@dataclass(frozen=True)
class SiteData:
    """Training questions and held-out evaluation questions (disjoint by id)."""

    name: str
    train: tuple[Question, ...]
    eval: tuple[Question, ...]

    @property
    def eval_set_hash(self) -> str:
        """sha256 over the evaluation question ids: says on-chain which set a metric is about."""
        h = hashlib.sha256()
        for q in self.eval:
            h.update(q.id.encode() + b"\n")
        return h.hexdigest()

    def round_window(self, round: int, per_round: int) -> list[Question]:
        """The training questions for a round: a rotating window of ``per_round`` (0 = all)."""
        if per_round <= 0 or per_round >= len(self.train):
            return list(self.train)
        start = ((round - 1) * per_round) % len(self.train)
        rows = list(self.train[start : start + per_round])
        if len(rows) < per_round:
            rows += list(self.train[: per_round - len(rows)])
        return rows


def _load_one(cfg: NodeConfig, f: DataFile, section: str, index: int) -> list[Question]:
    try:
        if f.source:
            rows = load_source(f.source, f.split)
        else:
            path = cfg.resolve(f.path)
            if not path.is_file():
                raise ConfigError(f"{cfg.path.name}: [data] {section}[{index}].path: {path} does not exist")
            rows = load_medmcqa(path) if f.format == "medmcqa" else load_medqa(path, path.stem)
    except ConfigError:
        raise
    except Exception as exc:  # DataError names file and line
        raise ConfigError(f"{cfg.path.name}: [data] {section}[{index}] ({f.describe()}): {exc}") from None
    if f.part != "all":
        train, held = split_by_hash(rows, f.eval_fraction, PART_SALT)
        rows = train if f.part == "train" else held
    if f.shard:
        k, n = (int(x) for x in f.shard.split("/"))
        rows = [q for q in rows if int(hash_fraction(q.id, SHARD_SALT) * n) == k - 1]
    return rows


def load_site_data(cfg: NodeConfig) -> SiteData:
    """Load and check the configured data; ConfigError if it is missing, malformed, empty or overlapping."""
    train: list[Question] = []
    held: list[Question] = []
    for i, f in enumerate(cfg.data.train):
        train += _load_one(cfg, f, "train", i)
    for i, f in enumerate(cfg.data.eval):
        held += _load_one(cfg, f, "eval", i)
    if not train:
        raise ConfigError(f"{cfg.path.name}: [data] train: selects no questions; check source/split/shard")
    if not held:
        raise ConfigError(f"{cfg.path.name}: [data] eval: selects no questions; check source/split/shard")
    train_ids = {q.id for q in train}
    overlap = [q.id for q in held if q.id in train_ids]
    if overlap:
        raise ConfigError(
            f"{cfg.path.name}: [data] eval shares {len(overlap)} question(s) with train (e.g. {overlap[0]}); "
            "evaluate on held-out rows only"
        )
    if cfg.data.eval_limit:
        held = held[: cfg.data.eval_limit]
    return SiteData(cfg.data.name, tuple(train), tuple(held))
