"""The node's decision points as one interface, with the honest default (like a flwr Strategy).

The round machine and the roles ask ``node.behaviour`` wherever a site could act otherwise: whether
to train, what to commit, which usable updates to aggregate, what to submit as the aggregate, how
to vote, whether to fetch ahead, what to serve and to whom, and what to do when a step is reached
or another member's update is seen. Every production node runs `HonestBehaviour`. A test harness
may hand a node another implementation (`medfed-node start --behaviour`, hidden; see `load`) to
make it misbehave in one precise way; no such implementation ships with the node.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from node.context import Node
    from node.state import Submission, UpdateRecord

Verdict = tuple[bool | None, str]  # (approve, reason); approve None = abstain
log = logging.getLogger("medfed.behaviour")

# The steps `Behaviour.reached` is told about, in round order.
STEPS = (
    "trained",  # our update is trained and stored, not committed yet
    "committing",  # the commit transaction is about to be sent
    "committed",  # the commit transaction is mined, not recorded in the store yet
    "aggregating",  # elected aggregator for (round, attempt), nothing fetched yet
    "voting",  # a verdict is reached, neither recorded nor sent yet
)


class Behaviour(ABC):
    """What a site decides at each point of the protocol where it has a choice."""

    @abstractmethod
    async def reached(self, node: Node, step: str, round: int, attempt: int = 0) -> None:
        """The node reached ``step`` (one of STEPS) of ``round``/``attempt``."""

    @abstractmethod
    def trains(self, node: Node, round: int) -> bool:
        """Whether to train (and then commit) an update of our own for ``round``."""

    @abstractmethod
    async def saw_update(self, node: Node, round: int, member: str, sha256: str, via: str) -> None:
        """Another member's update of ``round`` was seen ``via`` "chain" (its commit) or "gossip"."""

    @abstractmethod
    async def update_to_commit(self, node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
        """The update to commit, given our trained one (which passed our own checks)."""

    @abstractmethod
    def aggregate_to_submit(
        self, node: Node, round: int, attempt: int, state: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The aggregate to submit, given the one computed from the usable updates."""

    @abstractmethod
    def leaves_out(self, node: Node, round: int, attempt: int, member: str) -> bool:
        """As aggregator, whether to leave ``member``'s usable update out as unavailable."""

    @abstractmethod
    def prefetches(self, node: Node, round: int) -> bool:
        """Whether to fetch the round's updates while the aggregator works (verifiers)."""

    @abstractmethod
    async def verdict(self, node: Node, sub: Submission, judge: Callable[[], Awaitable[Verdict]]) -> Verdict:
        """Our vote on ``sub``; ``judge`` recomputes it and checks its claims."""

    @abstractmethod
    def offers(self, node: Node, sha256: str, kind: str, round: int) -> bool:
        """Whether to serve (and announce) an adapter we hold."""

    @abstractmethod
    def serves_to(self, node: Node, requester: str, sha256: str, kind: str, round: int) -> bool:
        """Whether to answer a member's request that the access policy allows."""


class HonestBehaviour(Behaviour):
    """The protocol as written: train, commit our own update, submit what we computed, vote what
    the recomputation says, fetch ahead, serve every allowed request."""

    async def reached(self, node: Node, step: str, round: int, attempt: int = 0) -> None:
        return None

    def trains(self, node: Node, round: int) -> bool:
        return True

    async def saw_update(self, node: Node, round: int, member: str, sha256: str, via: str) -> None:
        return None

    async def update_to_commit(self, node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
        return rec

    def aggregate_to_submit(
        self, node: Node, round: int, attempt: int, state: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return state

    def leaves_out(self, node: Node, round: int, attempt: int, member: str) -> bool:
        return False

    def prefetches(self, node: Node, round: int) -> bool:
        return True

    async def verdict(self, node: Node, sub: Submission, judge: Callable[[], Awaitable[Verdict]]) -> Verdict:
        return await judge()

    def offers(self, node: Node, sha256: str, kind: str, round: int) -> bool:
        return True

    def serves_to(self, node: Node, requester: str, sha256: str, kind: str, round: int) -> bool:
        return True


def load(spec: str) -> Behaviour:
    """The behaviour a test harness names: ``MODULE:FACTORY[=ARGUMENT]``, MODULE a dotted module
    name or a ``.py`` file; ``FACTORY(ARGUMENT)`` (``""`` when absent) must return a Behaviour."""
    target, _, argument = spec.partition("=")
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise ValueError(f"behaviour {spec!r}: expected MODULE:FACTORY[=ARGUMENT]")
    if where.endswith(".py"):
        module_name = f"medfed_behaviour_{Path(where).stem}"
        loader = importlib.util.spec_from_file_location(module_name, where)
        if loader is None or loader.loader is None:
            raise ValueError(f"behaviour {spec!r}: cannot load {where}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    made = getattr(module, name)(argument)
    if not isinstance(made, Behaviour):
        raise TypeError(f"behaviour {spec!r}: {name} returned {type(made).__name__}, not a Behaviour")
    log.warning("NOT THE HONEST NODE: behaviour %s is loaded (a test harness only)", spec)
    return made
