"""A site's privacy budget: the DP-SGD plan derived from [privacy], the federation's policy, and
the ledger of what was spent (kept in the state store, so a restart never forgets a spend).

The plan: every round trains ``steps`` DP-SGD steps on Poisson batches of the site's whole
training split (rate ``expected_batch / rows``); the noise multiplier is the smallest that keeps
``rounds x steps`` such steps within (target_epsilon, delta) by Opacus's RDP accountant. The ledger
records each training's (noise multiplier, rate, steps) *before* it runs (a training that crashes
still counts: conservative), and epsilon spent is always recomputed from it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from node.config import NodeConfig
from node.errors import StartupError
from node.state import StateStore
from training.bounds import PrivacyPolicy
from training.errors import TrainingError
from training.privacy import (
    DpConfig,
    default_delta,
    epsilon_spent,
    noise_for_budget,
    sample_rate,
    steps_per_round,
)

log = logging.getLogger("medfed.privacy")

LEDGER_KEY = "privacy_ledger"  # state store meta: JSON list of [round, sigma, rate, steps]
# a budget is spent when one more round would exceed it by more than the accountant's search tolerance
EPSILON_SLACK = 1e-9


def privacy_policy(cfg: NodeConfig) -> PrivacyPolicy:
    """The federation's privacy policy as configured (part of the on-chain config hash)."""
    p = cfg.privacy
    return PrivacyPolicy(p.require_noise_multiplier, p.require_max_grad_norm)


@dataclass(frozen=True)
class PrivacyPlan:
    """DP-SGD settings of every round of this site and the budget they are derived from."""

    target_epsilon: float
    delta: float
    max_grad_norm: float
    noise_multiplier: float
    rate: float
    expected_batch: int
    steps: int
    rounds: int

    def dp_config(self) -> DpConfig:
        """One round's training settings (sampling and noise from the OS's entropy)."""
        return DpConfig(self.noise_multiplier, self.max_grad_norm, self.expected_batch, self.steps)

    def describe(self) -> str:
        return (
            f"DP-SGD: budget epsilon {self.target_epsilon:g} at delta {self.delta:.0e} over "
            f"{self.rounds} rounds of {self.steps} steps; noise multiplier {self.noise_multiplier:.3f}, "
            f"clipping {self.max_grad_norm:g}, Poisson rate {self.rate:.4f}"
        )


def plan_privacy(cfg: NodeConfig, rows: int) -> PrivacyPlan | None:
    """The plan for ``rows`` training rows (None when [privacy] mode = "off"); checks the
    federation's policy and raises StartupError naming the fix when this site falls short."""
    p = cfg.privacy
    policy = privacy_policy(cfg)
    if not p.enabled:
        why = policy.refusal(p.mode, 0.0, 0.0)
        if why:
            raise StartupError(f"{cfg.path.name}: [privacy] {why}")
        return None
    m = cfg.model
    batch = m.batch_size * m.grad_accum
    rounds = p.rounds or cfg.rounds.last_round
    delta = p.delta or default_delta(rows)
    try:
        rate = sample_rate(batch, rows)
        steps = steps_per_round(rows, batch, 1, m.max_steps)
        sigma = noise_for_budget(p.target_epsilon, delta, rate, rounds * steps)
    except TrainingError as exc:
        raise StartupError(f"{cfg.path.name}: [privacy] {exc}") from None
    why = policy.refusal(p.mode, sigma, p.max_grad_norm)
    if why:
        raise StartupError(f"{cfg.path.name}: [privacy] {why}")
    return PrivacyPlan(p.target_epsilon, delta, p.max_grad_norm, sigma, rate, batch, steps, rounds)


class PrivacyLedger:
    """What this site has spent, from the state store."""

    def __init__(self, store: StateStore, plan: PrivacyPlan) -> None:
        self.store = store
        self.plan = plan
        self.refusal_said = False

    def entries(self) -> list[tuple[int, float, float, int]]:
        """(round, noise multiplier, rate, steps) of every DP training so far."""
        raw = self.store.get_meta(LEDGER_KEY)
        return [(int(r), float(s), float(q), int(n)) for r, s, q, n in json.loads(raw)] if raw else []

    def spent(self, up_to_round: int | None = None) -> float:
        """epsilon spent by the trainings of rounds <= ``up_to_round`` (all when None)."""
        return epsilon_spent(
            [(s, q, n) for r, s, q, n in self.entries() if up_to_round is None or r <= up_to_round],
            self.plan.delta,
        )

    def after_one_more(self) -> float:
        """epsilon spent if this site trains one more round with the plan."""
        p = self.plan
        history = [(s, q, n) for _, s, q, n in self.entries()]
        return epsilon_spent([*history, (p.noise_multiplier, p.rate, p.steps)], p.delta)

    def may_train(self, round: int) -> bool:
        """Whether one more round stays within the budget; says once (per process) when not."""
        if self.refusal_said:  # the ledger only grows: once spent, always spent
            return False
        after = self.after_one_more()
        if after <= self.plan.target_epsilon + EPSILON_SLACK:
            return True
        if not self.refusal_said:
            self.refusal_said = True
            log.warning(
                "round %d: privacy budget spent (epsilon %.3f of %g at delta %.0e; one more round "
                "would reach %.3f): serving as verifier/aggregator only",
                round,
                self.spent(),
                self.plan.target_epsilon,
                self.plan.delta,
                after,
            )
        return False

    def record(self, round: int) -> None:
        """Count one round's training (before it runs)."""
        p = self.plan
        entries = [*self.entries(), (round, p.noise_multiplier, p.rate, p.steps)]
        self.store.set_meta(LEDGER_KEY, json.dumps(entries))
