"""Update bounds, norm clipping against the round's median, sample caps and the federation config
hash: what every verifier must compute identically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.aggregation import AggregationInput, aggregate
from training.bounds import (
    NO_BOUNDS,
    FederationRules,
    UpdateBounds,
    agreement,
    bounded_inputs,
    capped_samples,
    check_update_bounds,
    clip_scales,
    delta_norm,
    disagreeing,
    federation_config_hash,
    lower_median,
)
from training.errors import AdapterInvalid
from training.lora import LoraSettings
from training.train import divergence_message

REPO = Path(__file__).resolve().parents[2]
KEYS = ("m.lora_A.weight", "m.lora_B.weight")


def _state(seed: int, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal((4, 8)) * scale).astype(np.float32) for k in KEYS}


REF = _state(0, 0.1)


def _update(seed: int, scale: float = 0.01) -> dict[str, np.ndarray]:
    d = _state(seed, scale)
    return {k: (REF[k] + d[k]).astype(np.float32) for k in KEYS}


def test_huge_finite_values_break_max_abs_and_the_norm_limit() -> None:
    poison = {k: np.full((4, 8), 1e30, np.float32) for k in KEYS}
    with pytest.raises(AdapterInvalid, match="exceeds the federation's bound max_abs = 100"):
        check_update_bounds(poison, REF, UpdateBounds())
    with pytest.raises(AdapterInvalid, match="max_update_norm = 5"):
        check_update_bounds(poison, REF, UpdateBounds(max_abs=0, max_update_norm=5.0))
    assert check_update_bounds(_update(1), REF, UpdateBounds(max_update_norm=5.0)) < 5.0
    nan = _update(2)
    nan[KEYS[0]][0, 0] = np.nan
    with pytest.raises(AdapterInvalid):
        check_update_bounds(nan, REF, UpdateBounds())


def test_clipping_bounds_one_outlier_from_two_members_up() -> None:
    assert lower_median([3.0, 1.0]) == 1.0 and lower_median([5.0, 1.0, 2.0]) == 2.0
    assert clip_scales([1.0, 100.0], 3.0) == [1.0, 0.03]
    assert clip_scales([1.0, 2.0, 100.0], 0.0) == [1.0, 1.0, 1.0]
    honest = [AggregationInput(f"0x{i:040x}", 16, _update(i)) for i in (1, 2)]
    hostile = AggregationInput("0x" + "f" * 40, 16, _update(9, scale=50.0))  # under max_abs, far off
    out = bounded_inputs([*honest, hostile], REF, UpdateBounds())
    norms = [delta_norm(i.state, REF) for i in out]
    median = sorted(delta_norm(i.state, REF) for i in honest)[1]  # lower median of all three
    assert norms[2] <= 3.0 * median * (1 + 1e-5)
    assert all(np.array_equal(out[i].state[k], honest[i].state[k]) for i in (0, 1) for k in KEYS)
    # the poisoned average moves the global by far less than the raw one would
    raw = aggregate("fedavg", [*honest, hostile])
    safe = aggregate("fedavg", out)
    assert delta_norm(safe, REF) < delta_norm(raw, REF) / 50


def test_sample_counts_are_capped_absolutely_and_against_the_median() -> None:
    assert capped_samples([16, 16, 10**9], UpdateBounds()) == [16, 16, 64]
    assert capped_samples([16, 16, 10**9], UpdateBounds(max_samples=20, samples_factor=0)) == [16, 16, 20]
    assert capped_samples([16, 16, 10**9], NO_BOUNDS) == [16, 16, 10**9]
    inputs = [AggregationInput(f"0x{i:040x}", n, _update(i)) for i, n in ((1, 16), (2, 16), (3, 10**9))]
    assert [i.num_samples for i in bounded_inputs(inputs, REF, UpdateBounds())] == [16, 16, 64]


BYTES_SCRIPT = """
import hashlib, sys
import numpy as np
from training.aggregation import AggregationInput, aggregate
from training.bounds import UpdateBounds, bounded_inputs
rng = np.random.default_rng(5)
ref = {k: rng.standard_normal((64, 96)).astype(np.float32) for k in ("a.lora_A.weight", "a.lora_B.weight")}
ins = []
for i, s in enumerate((0.01, 0.02, 30.0)):
    st = {k: (v + rng.standard_normal(v.shape) * s).astype(np.float32) for k, v in ref.items()}
    ins.append(AggregationInput(f"0x{i:040x}", 16 + i, st))
order = list(reversed(ins)) if sys.argv[1] == "r" else ins
out = aggregate("fedavg", bounded_inputs(order, ref, UpdateBounds()))
print(hashlib.sha256(b"".join(out[k].tobytes() for k in sorted(out))).hexdigest())
"""


def test_clipped_aggregate_is_byte_identical_across_processes_and_input_order() -> None:
    outs = {
        subprocess.run(
            [sys.executable, "-c", BYTES_SCRIPT, order], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.strip()
        for order in ("f", "r")
    }
    assert len(outs) == 1


def test_federation_config_hash_covers_lora_strategy_bounds_and_fallback() -> None:
    lora = LoraSettings(rank=4, alpha=8)
    base = federation_config_hash(lora, FederationRules())
    assert base == federation_config_hash(LoraSettings(rank=4, alpha=8), FederationRules())
    others = {
        federation_config_hash(LoraSettings(rank=8, alpha=8), FederationRules()),
        federation_config_hash(lora, FederationRules(strategy="exact")),
        federation_config_hash(lora, FederationRules().with_bounds(max_abs=1000.0)),
        federation_config_hash(lora, FederationRules().with_bounds(clip_factor=0.0)),
        federation_config_hash(lora, FederationRules().with_bounds(max_samples=64)),
        federation_config_hash(lora, FederationRules(fallback_after=3)),
    }
    assert base not in others and len(others) == 6
    assert base != lora.config_hash()


def test_divergence_message_names_the_likely_cause(tmp_path: Path) -> None:
    from training.adapter_io import write_canonical_adapter

    settings = LoraSettings(rank=4, alpha=8, target_modules=("m",))
    state = {
        "base_model.model.m.lora_A.weight": REF[KEYS[0]],
        "base_model.model.m.lora_B.weight": REF[KEYS[1]].T,
    }
    write_canonical_adapter(state, settings, "x", tmp_path / "healthy")
    assert "lower [training] learning_rate (now 0.5)" in divergence_message(tmp_path / "healthy", 0.5)
    poisoned = {k: np.full_like(v, 3e29) for k, v in state.items()}
    write_canonical_adapter(poisoned, settings, "x", tmp_path / "poisoned")
    msg = divergence_message(tmp_path / "poisoned", 0.5)
    assert "likely poisoned" in msg and "not the learning rate" in msg and "fallback_after" in msg


def test_agreement_names_updates_the_others_do_not_confirm_and_is_order_independent() -> None:
    """Issue 24: honest updates share a direction (a common part plus each site's own); the
    reference sent back, noise of an honest norm and an update pointing elsewhere do not."""
    rng = np.random.default_rng(5)
    common = {k: rng.standard_normal((4, 8)) * 0.01 for k in KEYS}

    def honest(seed: int) -> dict[str, np.ndarray]:
        own = _state(seed, 0.008)
        return {k: (REF[k] + common[k] + own[k]).astype(np.float32) for k in KEYS}

    states = {"0xa": honest(1), "0xb": honest(2), "0xc": honest(3)}
    assert disagreeing(states, REF, 0.1) == {}
    cos = agreement(states, REF)
    assert all(c > 0.3 for c in cos.values()), cos
    norm = delta_norm(states["0xa"], REF)
    noise = _state(9, 1.0)
    scale = norm / delta_norm(noise, {k: np.zeros((4, 8), np.float32) for k in KEYS})
    riders = {
        "0xd": dict(REF),  # the reference itself
        "0xe": {k: (REF[k] + noise[k] * scale).astype(np.float32) for k in KEYS},  # noise, honest norm
    }
    for who, state in riders.items():
        out = disagreeing({**states, who: state}, REF, 0.1)
        assert set(out) == {who}, out
        assert "min_agreement = 0.1" in out[who]
    said = disagreeing({**states, "0xd": riders["0xd"]}, REF, 0.1)["0xd"]
    assert "is the round's reference adapter" in said
    # the rule is off below three candidates, and at 0; the same verdicts whatever the dict order
    assert disagreeing({"0xa": states["0xa"], "0xd": riders["0xd"]}, REF, 0.1) == {}
    assert disagreeing({**states, **riders}, REF, 0.0) == {}
    forward = agreement({**states, **riders}, REF)
    backward = agreement(dict(reversed(list({**states, **riders}.items()))), REF)
    assert forward == backward
    # the rule is in the federation config hash
    settings = LoraSettings(rank=4, alpha=8)
    assert federation_config_hash(settings, FederationRules()) != federation_config_hash(
        settings, FederationRules().with_bounds(min_agreement=0.2)
    )
    with pytest.raises(Exception, match="min_agreement"):
        UpdateBounds(min_agreement=1.0)
    # off, the rules stay out of the hash: a federation deployed before them keeps its hash
    import hashlib
    import json

    old = FederationRules().with_bounds(min_update_ratio=0.0)
    doc = {"lora": settings.canonical(), "rules": old.canonical()}
    for key in ("min_agreement", "min_update_ratio"):
        del doc["rules"]["bounds"][key]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert federation_config_hash(settings, old) == hashlib.sha256(text.encode()).hexdigest()
    assert federation_config_hash(settings, old) != federation_config_hash(settings, FederationRules())
