"""Seeded train/eval subsets per site, and the check that no evaluated question was trained on."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from training.data import Question, hash_fraction, load_source
from training.experiment.config import SITES, ExperimentConfig
from training.experiment.errors import ExperimentError

# The same hash shards as medfed-localnet's nodes (node/data.py SHARD_SALT): institution k of n of a
# source holds the questions whose id hashes into the k-th n-th of [0, 1).
SHARD_SALT = "medfed-node-shard-v1"


@dataclass(frozen=True)
class Institution:
    """One simulated institution: its name, the dataset (site column) it draws from, its questions."""

    name: str
    site: str
    source: str
    train: tuple[Question, ...]


@dataclass(frozen=True)
class SiteData:
    """One dataset's training subset and its test subset (disjoint by id and by question stem).

    ``institutions`` split ``train`` between the simulated institutions that draw on this dataset
    (one, named like the site, unless ``--sites`` is more than 3).
    """

    name: str
    source: str
    train: tuple[Question, ...]
    test: tuple[Question, ...]
    train_pool: int
    test_pool: int
    excluded_overlap: int
    institutions: tuple[Institution, ...] = ()


def institutions_per_site(n_sites: int) -> dict[str, int]:
    """How many institutions draw on each dataset: institution i uses dataset i mod 3 (as localnet)."""
    counts = {s.name: 0 for s in SITES}
    for i in range(n_sites):
        counts[SITES[i % len(SITES)].name] += 1
    return counts


def institution_order(sites: list[SiteData]) -> list[Institution]:
    """All institutions interleaved by dataset (CN, EN, IN, CN-2, EN-2, ...): the seed order."""
    out: list[Institution] = []
    depth = max((len(s.institutions) for s in sites), default=0)
    for k in range(depth):
        out += [s.institutions[k] for s in sites if k < len(s.institutions)]
    return out


def train_seed(seed: int, round_no: int, index: int, n_institutions: int) -> int:
    """The training seed of institution ``index`` in round ``round_no`` (the same in every method).

    Up to 10 institutions keep the original ``seed*1000 + round*10 + index``; more use a wider
    spacing so that no two (round, institution) pairs share a seed.
    """
    if n_institutions <= 10:
        return seed * 1000 + round_no * 10 + index
    return seed * 1_000_000 + round_no * 1000 + index


def stem(q: Question) -> str:
    """The question text, lower-cased with runs of whitespace collapsed (what leakage is judged on)."""
    return re.sub(r"\s+", " ", q.question.lower()).strip()


def select(cfg: ExperimentConfig) -> list[SiteData]:
    """Draw each site's training and test subsets with ``cfg.seed``; fails if a test row was trained on.

    Test candidates whose stem occurs in *any* site's training split (not only the drawn subset)
    are dropped first: MedQA-Mainland repeats some stems between dev and test.
    With ``cfg.sites`` > 3, a dataset used by k institutions is cut into k hash shards and each
    institution draws its share of the dataset's training size from its own shard; the test
    subsets are the same as with 3 sites.
    """
    pools = {s.name: load_source(s.source, s.train_split, cfg.data_dir) for s in SITES}
    tests = {s.name: load_source(s.source, s.eval_split, cfg.data_dir) for s in SITES}
    train_stems = {stem(q) for pool in pools.values() for q in pool}
    shards = institutions_per_site(cfg.sites)
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
        train = rng.sample(pool, n_train)  # also advances rng to the same test draw for any --sites
        if shards[site.name] > 1:
            insts = _shard(cfg, site.name, site.source, pool, n_train, shards[site.name])
            train = [q for inst in insts for q in inst.train]
        else:
            insts = (Institution(site.name, site.name, site.source, tuple(train)),)
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
                institutions=insts,
            )
        )
    assert_no_leakage(out)
    return out


def _shard(
    cfg: ExperimentConfig, site: str, source: str, pool: list[Question], n_train: int, k: int
) -> tuple[Institution, ...]:
    if n_train < k:
        raise ExperimentError(
            f"site {site}: {n_train} training questions cannot be split between {k} institutions; "
            f"raise --train-sizes to at least {k} per dataset or lower --sites"
        )
    parts: list[list[Question]] = [[] for _ in range(k)]
    for q in pool:
        parts[int(hash_fraction(q.id, SHARD_SALT) * k)].append(q)
    out = []
    for j in range(k):
        name = f"{site}-{j + 1}"
        share = n_train // k + (1 if j < n_train % k else 0)
        if share > len(parts[j]):
            raise ExperimentError(
                f"institution {name}: {share} training questions asked, its shard has {len(parts[j])}; "
                "lower --train-sizes or --sites"
            )
        rng = random.Random(f"{cfg.seed}:{name}")
        out.append(Institution(name, site, source, tuple(rng.sample(parts[j], share))))
    return tuple(out)


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
