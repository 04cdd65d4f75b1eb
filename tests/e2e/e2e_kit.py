"""Helpers for the end-to-end federation tests: run a local federation, read its chain history,
and compute what the contract must have paid from the votes and aggregates alone."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostile_behaviour import behaviour_spec

from chain import types as ev
from chain.events import EventReader
from localnet import federation as F

# Short deadlines for the tiny model. Fetch patience is short so that an unreachable update is
# given up quickly (the crashed aggregator's update) and the round moves on.
E2E_SIZING = dataclasses.replace(
    F.TINY_SIZING, commit_s=20, aggregate_s=20, verify_s=16, fetch_patience_s=6.0
)
REWARDS = (10 * 10**18, 5 * 10**18, 1 * 10**18)  # contributor, aggregator, verifier


def netns_why_not() -> str | None:
    """Why sites cannot run in network namespaces here (issue 19), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode:
        return "`ip netns` is not available"
    if shutil.which("iptables") is None:
        return "iptables is not installed (bash scripts/bootstrap.sh system)"
    return None


@dataclass
class History:
    """The federation's chain events, grouped the way the assertions need them."""

    events: list[ev.ChainEvent]

    def of(self, kind: type[ev.ChainEvent], round: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (round is None or e.round == round)]  # type: ignore[attr-defined]

    def final(self, round: int) -> ev.RoundFinalized:
        (f,) = self.of(ev.RoundFinalized, round)
        return f  # type: ignore[no-any-return]

    def submission(self, round: int, attempt: int) -> ev.AggregateSubmitted:
        (s,) = [e for e in self.of(ev.AggregateSubmitted, round) if e.attempt == attempt]
        return s  # type: ignore[no-any-return]


def history(fed: F.Federation) -> History:
    return History(EventReader(fed.client()).read(fed.devnet.deploy_block))


def expected_rewards(h: History, rewards: tuple[int, int, int] = REWARDS) -> dict[str, int]:
    """What the contract rules pay, derived from submissions and votes (not from RewardPaid):
    see `expected_round_rewards`."""
    total: dict[str, int] = defaultdict(int)
    for (_, a), amount in expected_round_rewards(h, rewards).items():
        total[a] += amount
    return dict(total)


def expected_round_rewards(h: History, rewards: tuple[int, int, int] = REWARDS) -> dict[tuple[int, str], int]:
    """The contract's settlement (docs/contract.md, Rewards) per (round, lowercase address), zero
    amounts left out, in rounds that finalized. The accepted hash and its invalid claims are the
    truth: an earlier attempt with the same hash whose invalid claims the accepted one also makes
    pays its aggregator and its approvers, and its rejecters forfeit; any other earlier attempt
    that was "rejected", or that has another hash over the same included updates, makes its
    aggregator and approvers forfeit and credits its rejecters; any other "disputed" one counts
    for nobody; rejecters of the accepted aggregate forfeit, and so do the committers it names
    invalid (issue 12). A forfeit is the whole round."""
    contributor, aggregator, verifier = rewards
    pay: dict[tuple[int, str], int] = defaultdict(int)
    for f in h.of(ev.RoundFinalized):
        r = f.round
        sub = h.submission(r, f.attempt)
        accepted = bytes(sub.sha256)
        votes = h.of(ev.VoteCast, r)

        def voters(attempt: int, approve: bool, votes: list[ev.VoteCast] = votes) -> set[str]:
            return {v.voter.lower() for v in votes if v.attempt == attempt and v.approve == approve}

        forfeit = voters(f.attempt, False) | {a.lower() for a in sub.invalid}
        agg_paid = {sub.aggregator.lower()}
        credits: dict[str, int] = defaultdict(int)
        for a in voters(f.attempt, True):
            credits[a] += 1
        for failed in h.of(ev.AttemptFailed, r):
            if failed.reason not in ("rejected", "disputed"):
                continue
            k = failed.attempt
            earlier = h.submission(r, k)
            same_sha = bytes(earlier.sha256) == accepted
            if same_sha and set(earlier.invalid) <= set(sub.invalid):
                agg_paid.add(earlier.aggregator.lower())
                forfeit |= voters(k, False)
                for a in voters(k, True):
                    credits[a] += 1
            elif failed.reason == "rejected" or (not same_sha and set(earlier.included) == set(sub.included)):
                forfeit |= {earlier.aggregator.lower()} | voters(k, True)
                for a in voters(k, False):
                    credits[a] += 1
        for member in sub.included:
            pay[r, member.lower()] += contributor
        for a in agg_paid:
            pay[r, a] += aggregator
        for a, n in credits.items():
            pay[r, a] += n * verifier
        for a in forfeit:
            pay.pop((r, a), None)
    return dict(pay)


def paid(h: History, round: int | None = None) -> dict[str, int]:
    """Sum of RewardPaid per address (of one round, or of all)."""
    out: dict[str, int] = defaultdict(int)
    for p in h.of(ev.RewardPaid, round):
        out[p.to.lower()] += int(p.amount)
    return dict(out)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def node_index(fed: F.Federation, address: str) -> int:
    return [a.lower() for a in fed.devnet.addresses].index(address.lower())


def run(
    dir: Path,
    nodes: int,
    rounds: int,
    faults: Mapping[int, str],
    restart_crashed: bool,
    timeout_s: float,
    commit_s: int | None = None,
    strategy: str = "fedavg",
    sizing: F.Sizing | None = None,
    chain: str = "anvil",
    genesis: str = "istanbul",
    fetch_patience_s: float | None = None,
    rules: Any = None,
    data: Path | None = None,
    monitoring: bool = False,
    aggregate_s: int | None = None,
    verify_s: int | None = None,
    until: Callable[[F.Federation, History], bool] | None = None,
    restart_when: Callable[[F.Federation, History, int], bool] | None = None,
    members: int | None = None,
    may_exit: Collection[int] = (),
    netns: bool = False,
    firewalled: int = 0,
    privacy: Mapping[int, str] | None = None,
) -> tuple[F.Federation, dict[int, str]]:
    """Launch, open round 1 when every node is ready, follow until ``rounds`` are final; stop the nodes.

    ``faults``: node -> a fault spec of tests/support/hostile_behaviour.py: that node runs the
    dishonest behaviour (`medfed-node start --behaviour`); the others are honest.

    With ``until``: follow until ``until(fed, history)`` holds instead (``rounds`` is then the most
    the nodes run; a round in progress is cut short), restarting a node that a crash fault stopped
    once ``restart_when(fed, history, node)`` holds (see `follow`). ``members``: admit only that
    many wallets at deployment (the others wait for the members' vote, issue 21); ``may_exit``:
    nodes whose exit is expected (e.g. a member voted out stops). ``netns``/``firewalled``: sites in
    network namespaces, the last ``firewalled`` behind a firewall (issue 19); ``privacy``: node -> a
    [privacy] section for its medfed.toml (issue 20).
    The chain stays up (read its history, then `F.down(dir)`); on failure everything is stopped.
    """
    sizing = sizing or E2E_SIZING
    if verify_s is not None:
        sizing = dataclasses.replace(sizing, verify_s=verify_s)
    if commit_s is not None:
        sizing = dataclasses.replace(sizing, commit_s=commit_s)
    if fetch_patience_s is not None:
        sizing = dataclasses.replace(sizing, fetch_patience_s=fetch_patience_s)
    if aggregate_s is not None:
        sizing = dataclasses.replace(sizing, aggregate_s=aggregate_s)
    fed = F.launch(
        dir,
        nodes,
        rounds,
        model="tiny",
        sizing=sizing,
        fresh=True,
        behaviours={i: behaviour_spec(spec) for i, spec in faults.items() if spec},
        explorer=False,
        rewards=REWARDS,
        strategy=strategy,
        chain=chain,
        genesis=genesis,
        rules=rules,
        data=data,
        monitoring=monitoring,
        members=members,
        netns=netns,
        firewalled=firewalled,
        privacy=privacy,
    )
    try:
        F.wait_ready(fed, 180)
        F.open_first_round(fed)
        if until is None:
            done = F.wait_rounds(fed, rounds, timeout_s, restart_crashed=restart_crashed, progress=False)
        else:
            follow(fed, until, timeout_s, restart_when, may_exit)
            done = F.rounds_done(fed)
    except BaseException:
        for i in list(fed._procs):
            fed.stop_node(i)
        F.down(dir)
        raise
    for i in list(fed._procs):
        fed.stop_node(i)
    return fed, done


def follow(
    fed: F.Federation,
    until: Callable[[F.Federation, History], bool],
    timeout_s: float,
    restart_when: Callable[[F.Federation, History, int], bool] | None = None,
    may_exit: Collection[int] = (),
) -> History:
    """Poll the chain (every second) until ``until(fed, history)``; return that history.

    A node stopped by a crash fault (exit code F.RESTART_EXIT_CODE) is started again once ``restart_when(fed,
    history, node)`` holds: a member that comes back late. Any other exit, or the timeout, is an
    error."""
    deadline = time.monotonic() + timeout_s
    while True:
        h = history(fed)
        for i in range(len(fed.sites)):
            code = fed.node_exit_code(i)
            if code is None or i in may_exit:
                continue
            if code == F.RESTART_EXIT_CODE and restart_when is not None:
                if restart_when(fed, h, i):
                    fed.restarts[i] = fed.restarts.get(i, 0) + 1
                    fed.start_node(i)
                continue
            raise F.FederationError(f"node {i} exited with code {code}; see {fed.log_path(i)}")
        if until(fed, h):
            return h
        if time.monotonic() > deadline:
            raise F.FederationError(f"the federation did not reach the test's goal in {timeout_s:.0f} s")
        time.sleep(1.0)


def log_text(fed: F.Federation, i: int) -> str:
    return fed.log_path(i).read_text(errors="replace")
