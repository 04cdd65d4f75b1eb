"""Which adapter a round starts from, and the way back from a poisoned global adapter.

The contract's global adapter is the last finalized aggregate. If one ever gets through that
members cannot train on (their training diverges, or their own check refuses the result), no
member commits and every later round fails: the federation would be dead for good, since a failed
round keeps the global. So members agree, from chain events alone, on the round's *effective
base*:

    walk the rounds in order, starting from the initial adapter; a finalized round's aggregate
    becomes the base of the next round (and remembers the base it was built from: its parent);
    after ``fallback_after`` failed rounds in a row the current base is abandoned and its parent
    becomes the base again (again and again, down to the initial adapter).

Every member reads the same RoundFinalized/RoundFailed events, so every member computes the same
effective base, trains from it, and bounds every update against it: verifiers stay in step and
no contract change is needed. The chain still shows the poisoned aggregate as the last
``globalAdapter`` until a round built on the healthy parent finalizes.

With ``exact`` aggregation a round's effective base is the base weights plus the deltas of the
globals in its lineage, merged in order (every update is trained from the initial adapter and
measured against it). The fallback drops the abandoned global from that list; the learner puts
its unmerged base weights back and merges the healthy globals again, which gives the same bytes
as a node started fresh (node/learning.py). Every global is held by every member that evaluated
it and fetchable from its round's aggregator and committers, so the list can always be rebuilt.
"""

from __future__ import annotations

import logging

from node.context import Node
from node.state import StateStore

log = logging.getLogger("medfed.recovery")


def lineage(store: StateStore, initial_sha: str, round: int, fallback_after: int) -> list[str]:
    """The chain of bases round ``round`` builds on, oldest first; the last one is its effective
    base. Depends only on the outcomes of rounds 1..round-1 recorded from chain events."""
    return [sha for _, sha in lineage_rounds(store, initial_sha, round, fallback_after)]


def lineage_rounds(
    store: StateStore, initial_sha: str, round: int, fallback_after: int
) -> list[tuple[int, str]]:
    """:func:`lineage` with the round that finalized each global (0 for the initial adapter)."""
    chain = [(0, initial_sha)]
    failures = 0
    for k in range(1, round):
        o = store.outcome(k)
        if o is not None and o.status == "finalized":
            chain.append((k, o.sha256))
            failures = 0
            continue
        failures += 1
        if fallback_after and failures >= fallback_after and len(chain) > 1:
            dropped = chain.pop()
            failures = 0
            log.debug("rounds up to %d: abandoning global %s after failed rounds", k, dropped[1][:12])
    return chain


def effective_base(node: Node, round: int) -> str:
    """sha256 of the last healthy global under the fallback rule: the adapter round ``round``
    starts from (fedavg), or the last delta merged before it (exact)."""
    return effective_lineage(node, round)[-1][1]


def effective_lineage(node: Node, round: int) -> list[tuple[int, str]]:
    """(round, sha256) of the initial adapter and of every global round ``round`` builds on."""
    initial = node.store.get_meta("initial_sha256") or ""
    return lineage_rounds(node.store, initial, round, node.cfg.model.fallback_after)


def reference_sha(node: Node, round: int) -> str:
    """The adapter every update of ``round`` is measured against: the effective base (fedavg), or
    the federation's initial adapter that every ``exact`` update starts from."""
    if node.cfg.model.strategy == "exact":
        return node.store.get_meta("initial_sha256") or ""
    return effective_base(node, round)
