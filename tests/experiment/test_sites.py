"""``--sites N``: the three datasets split into N non-IID institutions (hash shards, as localnet)."""

from __future__ import annotations

import dataclasses

import pytest

from training.data import hash_fraction
from training.experiment.config import ExperimentConfig
from training.experiment.dataset import (
    SHARD_SALT,
    institution_order,
    institutions_per_site,
    select,
    train_seed,
)
from training.experiment.errors import ExperimentError
from training.experiment.plan import passes


def test_twelve_sites_shard_each_dataset_and_keep_the_test_sets() -> None:
    three = ExperimentConfig(model="tiny", train_sizes=(9, 8, 10), eval_size=5, seed=1)
    twelve = dataclasses.replace(three, sites=12)
    a, b = select(three), select(twelve)
    # The three test sets do not depend on the number of institutions.
    assert [[q.id for q in s.test] for s in a] == [[q.id for q in s.test] for s in b]
    assert [len(s.institutions) for s in a] == [1, 1, 1]
    assert [i.name for i in a[0].institutions] == ["CN"] and a[0].institutions[0].train == a[0].train
    insts = institution_order(b)
    assert [i.name for i in insts[:6]] == ["CN-1", "EN-1", "IN-1", "CN-2", "EN-2", "IN-2"]
    assert len(insts) == 12
    for site, size in zip(b, (9, 8, 10), strict=True):
        sizes = [len(i.train) for i in site.institutions]
        assert sum(sizes) == size and max(sizes) - min(sizes) <= 1  # the dataset's size, shared out
        assert len(site.train) == size
        for k, inst in enumerate(site.institutions):
            assert inst.site == site.name
            # Non-IID by construction: every question of institution k lies in hash shard k of 4.
            assert {int(hash_fraction(q.id, SHARD_SALT) * 4) for q in inst.train} == {k}
    ids = [q.id for i in insts for q in i.train]
    assert len(ids) == len(set(ids))  # no question trained by two institutions


def test_shards_are_the_ones_localnet_nodes_get() -> None:
    node_data = pytest.importorskip("node.data")
    assert node_data.SHARD_SALT == SHARD_SALT


def test_sites_options_are_checked() -> None:
    with pytest.raises(ExperimentError, match="--sites 2"):
        ExperimentConfig(sites=2)
    with pytest.raises(ExperimentError, match="raise --train-sizes"):
        select(ExperimentConfig(model="tiny", train_sizes=(2, 4, 4), eval_size=2, sites=9))
    assert institutions_per_site(7) == {"CN": 3, "EN": 2, "IN": 2}


def test_seeds_never_collide_and_three_sites_keep_the_original_seeds() -> None:
    assert [train_seed(0, r, i, 3) for r in (1, 2) for i in range(3)] == [10, 11, 12, 20, 21, 22]
    many = [train_seed(5, r, i, 40) for r in range(1, 4) for i in range(40)]
    assert len(set(many)) == len(many)


def test_single_site_evaluations_scale_with_sites() -> None:
    cfg = ExperimentConfig(sites=12)
    assert passes(cfg) == (7, 1 + 3 + 3 + 12)
