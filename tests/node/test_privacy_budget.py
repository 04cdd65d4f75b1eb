"""[privacy]: the template, the DP-SGD plan and the federation's policy, the budget ledger across
restarts, and the spend carried in the on-chain metrics tag."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import TEMPLATE, NodeConfig, load_config
from node.errors import ConfigError, StartupError
from node.learning import federation_hash
from node.metric_report import Figures, decode_report, report_values
from node.privacy import PrivacyLedger, plan_privacy
from node.state import StateStore

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ME = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _cfg(tmp_path: Path, **edits: str) -> NodeConfig:
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return load_config(p)


DP = {'mode = "off"': 'mode = "dp-sgd"', "rounds = 0": "rounds = 5"}


def test_the_template_has_privacy_off_and_dp_sgd_needs_a_horizon(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.privacy.mode == "off" and not cfg.privacy.enabled and cfg.privacy.target_epsilon == 8.0
    assert "[privacy]" in TEMPLATE and "# Sample-level differential privacy" in TEMPLATE
    assert plan_privacy(cfg, 100) is None
    with pytest.raises(ConfigError, match=r"\[privacy\] rounds: set the rounds the budget must last"):
        _cfg(tmp_path, **{'mode = "off"': 'mode = "dp-sgd"'})
    with pytest.raises(ConfigError, match=r"\[privacy\] mode: unknown mode 'central'"):
        _cfg(tmp_path, **{'mode = "off"': 'mode = "central"'})
    # [rounds] last_round is a horizon too
    cfg = _cfg(tmp_path, **{'mode = "off"': 'mode = "dp-sgd"', "last_round = 0": "last_round = 4"})
    plan = plan_privacy(cfg, 100)
    assert plan is not None and plan.rounds == 4


def test_the_plan_derives_the_noise_from_the_budget_and_the_policy_refuses_less(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **DP)
    plan = plan_privacy(cfg, 400)
    assert plan is not None
    # [training] max_steps 20, batch 4 x accumulation 1: 20 steps a round at rate 4/400
    assert (plan.steps, plan.expected_batch, plan.rate, plan.rounds) == (20, 4, 0.01, 5)
    assert plan.delta == 1e-4 and plan.max_grad_norm == 1.0
    tighter = plan_privacy(_cfg(tmp_path, **DP, **{"target_epsilon = 8.0": "target_epsilon = 1.0"}), 400)
    assert tighter is not None and tighter.noise_multiplier > plan.noise_multiplier > 0

    # the policy is part of the config hash; a member below it is refused in one line
    policy = {"require_noise_multiplier = 0.0": "require_noise_multiplier = 0.8"}
    assert federation_hash(_cfg(tmp_path, **policy)) != federation_hash(cfg)
    assert federation_hash(_cfg(tmp_path, **DP)) == federation_hash(_cfg(tmp_path))  # site-local
    with pytest.raises(StartupError, match=r'requires DP-SGD .*set \[privacy\] mode = "dp-sgd"') as e:
        plan_privacy(_cfg(tmp_path, **policy), 400)
    assert "\n" not in str(e.value) and str(e.value).startswith("medfed.toml: [privacy]")
    loose = {**DP, **policy, "target_epsilon = 8.0": "target_epsilon = 50.0"}
    with pytest.raises(
        StartupError, match=r"gives noise multiplier 0\.\d+: lower \[privacy\] target_epsilon"
    ):
        plan_privacy(_cfg(tmp_path, **loose), 400)
    assert tighter.noise_multiplier >= 0.8  # epsilon 1 is enough for that policy:
    ok = plan_privacy(_cfg(tmp_path, **DP, **policy, **{"target_epsilon = 8.0": "target_epsilon = 1.0"}), 400)
    assert ok == tighter
    clip = {**DP, "require_max_grad_norm = 0.0": "require_max_grad_norm = 0.5"}
    with pytest.raises(StartupError, match=r"max_grad_norm <= 0.5.*lower \[privacy\] max_grad_norm"):
        plan_privacy(_cfg(tmp_path, **clip), 400)


def test_the_budget_stops_training_and_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(tmp_path, **{**DP, "rounds = 5": "rounds = 3"})
    plan = plan_privacy(cfg, 200)
    assert plan is not None
    store = StateStore(tmp_path / "state", COORD, ME)
    ledger = PrivacyLedger(store, plan)
    trained = 0
    for r in range(1, 6):
        if ledger.may_train(r):
            ledger.record(r)
            trained += 1
    assert trained == 3  # the plan's horizon, and not one round more
    spent = ledger.spent()
    assert 0.9 * plan.target_epsilon < spent <= plan.target_epsilon
    assert 0 < ledger.spent(up_to_round=1) < ledger.spent(up_to_round=2) < spent
    said = [r for r in caplog.records if "privacy budget spent" in r.getMessage()]
    assert len(said) == 1 and said[0].getMessage().endswith(": serving as verifier/aggregator only")
    store.close()

    again = PrivacyLedger(StateStore(tmp_path / "state", COORD, ME), plan)  # a restart
    assert again.spent() == pytest.approx(spent) and not again.may_train(6)
    # a larger budget after the restart allows more, counting what was spent
    bigger = plan_privacy(_cfg(tmp_path, **{**DP, "target_epsilon = 8.0": "target_epsilon = 16.0"}), 200)
    assert bigger is not None
    more = PrivacyLedger(again.store, bigger)
    assert more.may_train(6) and more.after_one_more() > spent


def test_the_metrics_tag_carries_the_spend_and_old_tags_read_as_before() -> None:
    fig = Figures("mc", 50, accuracy=0.42, nll=1.25)
    set_hash = "ab" * 32
    plain, ppm = report_values(fig, set_hash)
    got = decode_report(plain, ppm)
    assert got["privacy"] is None and got["set"] == "ab" * 23 and got["value"] == 0.42
    tagged, ppm2 = report_values(fig, set_hash, (2.3456, 8.0))
    assert ppm2 == ppm and tagged[:8] == "4d464d02"
    got = decode_report(tagged, ppm2)
    assert got["privacy"] == {"epsilon": 2.346, "budget": 8.0}  # rounded up: never under-reports
    assert got["kind"] == "mc" and got["aux"] == 1.25 and got["set"] == "ab" * 15


def test_the_local_federation_writes_dp_sections_that_load(tmp_path: Path) -> None:
    """`medfed-localnet up --dp-epsilon 8 --dp-sites 2`: the first two nodes' [privacy]."""
    from localnet.errors import FederationError
    from localnet.nodeconfig import dp_sections

    assert dp_sections(3, 2, None, None) == {}
    sections = dp_sections(3, 2, 8.0, 2)
    assert sorted(sections) == [0, 1] and sorted(dp_sections(3, 2, 8.0, None)) == [0, 1, 2]
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    text = text[: text.index("\n[privacy]\n")] + text[text.index("\n[rounds]\n") :] + sections[0]
    (tmp_path / "medfed.toml").write_text(text)
    p = load_config(tmp_path / "medfed.toml").privacy
    assert (p.mode, p.target_epsilon, p.rounds) == ("dp-sgd", 8.0, 2)
    with pytest.raises(FederationError, match="--dp-epsilon must be > 0"):
        dp_sections(3, 2, 0.0, None)
