"""Bootstrap metrics against hand-computed values, and the train/test leakage check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training.data import Question
from training.experiment.config import ExperimentConfig
from training.experiment.dataset import SiteData, assert_no_leakage, select, stem
from training.experiment.errors import ExperimentError
from training.experiment.metrics import hmean, paired_delta, score


def test_score_point_values_match_hand_computation() -> None:
    correct = {"CN": np.array([1, 1, 0, 0]), "EN": np.array([1, 0, 0, 0]), "IN": np.array([1, 1, 1, 0])}
    s = score(correct, n_boot=200, seed=1)
    assert s.accuracy["CN"].value == pytest.approx(50.0)
    assert s.macro.value == pytest.approx((50 + 25 + 75) / 3)
    assert s.min.value == pytest.approx(25.0)
    assert s.hmean.value == pytest.approx(3 / (1 / 50 + 1 / 25 + 1 / 75))
    assert s.min.lo <= s.min.value <= s.min.hi and s.min.hi > s.min.lo


def test_hmean_is_zero_when_a_site_is_zero() -> None:
    assert float(hmean(np.array([0.0, 50.0, 60.0]))) == 0.0


def test_paired_delta_of_identical_methods_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    correct = {k: rng.integers(0, 2, 30) for k in ("CN", "EN", "IN")}
    d = paired_delta(correct, correct, n_boot=100)
    assert all(e.value == 0.0 and e.lo == 0.0 and e.hi == 0.0 for e in d.values())


def _q(qid: str, text: str) -> Question:
    return Question(qid, "medqa-us", "en", text, ("a", "b", "c", "d"), 0)


def test_leakage_check_rejects_shared_stem_even_with_another_id() -> None:
    site = SiteData("EN", "medqa-us", (_q("t1", "What is X?"),), (_q("e1", "what  is x?"),), 1, 1, 0)
    with pytest.raises(ExperimentError, match="trained on"):
        assert_no_leakage([site])
    ok = dataclasses.replace(site, test=(_q("e1", "What is Y?"),))
    assert assert_no_leakage([ok]) == {"trained_rows": 1, "test_rows": 1}


def test_selection_on_real_files_is_disjoint_seeded_and_sized() -> None:
    cfg = ExperimentConfig(model="tiny", train_sizes=(5, 3, 7), eval_size=9, seed=3)
    a, b = select(cfg), select(cfg)
    assert [len(s.train) for s in a] == [5, 3, 7] and all(len(s.test) == 9 for s in a)
    assert [q.id for s in a for q in s.test] == [q.id for s in b for q in s.test]
    trained = {stem(q) for s in a for q in s.train}
    assert not any(stem(q) in trained for s in a for q in s.test)
    # Mainland repeats some stems between dev and test: those test rows are never drawn.
    assert a[0].excluded_overlap > 0
    other = select(dataclasses.replace(cfg, seed=4))
    assert [q.id for q in other[0].test] != [q.id for q in a[0].test]


def test_config_rejects_bad_sizes() -> None:
    with pytest.raises(ExperimentError, match="train-sizes"):
        ExperimentConfig(train_sizes=(1, 0, 1))


def test_projection_counts_the_protocols_training_and_evaluation_passes() -> None:
    from training.experiment.plan import Costs, passes, project

    cfg = ExperimentConfig()
    assert passes(cfg) == (7, 10)  # round 1 shared + 2 more for each of 3 methods; 1+3+3+3 evals
    assert passes(dataclasses.replace(cfg, methods=("base", "fedavg"))) == (3, 4)
    unit = Costs({"CN": 1.0, "EN": 1.0, "IN": 1.0}, {"CN": 1.0, "EN": 1.0, "IN": 1.0})
    expected = 7 * sum(cfg.train_sizes) + 10 * 3 * cfg.eval_size
    assert project(cfg, unit, load_s=0.0) == pytest.approx(expected)


def test_experiment_imports_nothing_from_chain_p2p_node() -> None:
    import ast
    from pathlib import Path

    import training.experiment as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            for name in names:
                assert name.split(".")[0] not in {"chain", "p2p", "node", "localnet"}, (path, name)
