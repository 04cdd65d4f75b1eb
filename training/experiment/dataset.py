"""Seeded train/eval subsets per site, and the check that no evaluated question was trained on."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from training.data import Question, load_source
from training.experiment.config import SITES, ExperimentConfig
from training.experiment.errors import ExperimentError


@dataclass(frozen=True)
class SiteData:
    """One site's training subset and its test subset (disjoint by id and by question stem)."""

    name: str
    source: str
    train: tuple[Question, ...]
    test: tuple[Question, ...]
    train_pool: int
    test_pool: int
    excluded_overlap: int


def stem(q: Question) -> str:
    """The question text, lower-cased with runs of whitespace collapsed (what leakage is judged on)."""
    return re.sub(r"\s+", " ", q.question.lower()).strip()


def select(cfg: ExperimentConfig) -> list[SiteData]:
    """Draw each site's training and test subsets with ``cfg.seed``; fails if a test row was trained on.

    Test candidates whose stem occurs in *any* site's training split (not only the drawn subset)
    are dropped first: MedQA-Mainland repeats some stems between dev and test.
    """
    pools = {s.name: load_source(s.source, s.train_split, cfg.data_dir) for s in SITES}
    tests = {s.name: load_source(s.source, s.eval_split, cfg.data_dir) for s in SITES}
    train_stems = {stem(q) for pool in pools.values() for q in pool}
    out: list[SiteData] = []
    for site in SITES:
        rng = random.Random(f"{cfg.seed}:{site.name}")
        pool = pools[site.name]
        n_train = cfg.train_size(site.name)
        if n_train > len(pool):
            raise ExperimentError(
                f"site {site.name}: {n_train} training questions asked, {len(pool)} available; "
                "lower --train-sizes"
            )
        train = rng.sample(pool, n_train)
        candidates = [q for q in tests[site.name] if stem(q) not in train_stems]
        excluded = len(tests[site.name]) - len(candidates)
        if cfg.eval_size > len(candidates):
            raise ExperimentError(
                f"site {site.name}: {cfg.eval_size} test questions asked, {len(candidates)} available; "
                "lower --eval-size"
            )
        test = rng.sample(candidates, cfg.eval_size)
        out.append(
            SiteData(
                name=site.name,
                source=site.source,
                train=tuple(train),
                test=tuple(test),
                train_pool=len(pool),
                test_pool=len(tests[site.name]),
                excluded_overlap=excluded,
            )
        )
    assert_no_leakage(out)
    return out


def assert_no_leakage(sites: list[SiteData]) -> dict[str, int]:
    """Raise unless no test question shares an id or a stem with any question trained on."""
    trained_ids = {q.id for s in sites for q in s.train}
    trained_stems = {stem(q) for s in sites for q in s.train}
    for s in sites:
        ids = [q.id for q in s.test if q.id in trained_ids]
        stems = [q.id for q in s.test if stem(q) in trained_stems]
        if ids or stems:
            raise ExperimentError(
                f"site {s.name}: test questions {sorted(set(ids + stems))[:5]} were trained on; "
                "the train and test splits overlap, check MEDFED_DATA_DIR and the split settings"
            )
        if len({q.id for q in s.test}) != len(s.test):
            raise ExperimentError(f"site {s.name}: duplicate test question ids; the test file is corrupt")
    return {"trained_rows": len(trained_ids), "test_rows": sum(len(s.test) for s in sites)}
