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

Limit: with ``exact`` aggregation the effective base is the initial adapter plus the merged
deltas of every finalized round; falling back there would need un-merging and is not done
(``exact`` federations recover by a redeployment from a healthy global; docs/operations.md).
"""

from __future__ import annotations

import logging

from node.context import Node
from node.state import StateStore

log = logging.getLogger("medfed.recovery")


def lineage(store: StateStore, initial_sha: str, round: int, fallback_after: int) -> list[str]:
    """The chain of bases round ``round`` builds on, oldest first; the last one is its effective
    base. Depends only on the outcomes of rounds 1..round-1 recorded from chain events."""
    chain = [initial_sha]
    failures = 0
    for k in range(1, round):
        o = store.outcome(k)
        if o is not None and o.status == "finalized":
            chain.append(o.sha256)
            failures = 0
            continue
        failures += 1
        if fallback_after and failures >= fallback_after and len(chain) > 1:
            dropped = chain.pop()
            failures = 0
            log.debug("rounds up to %d: abandoning global %s after failed rounds", k, dropped[:12])
    return chain


def effective_base(node: Node, round: int) -> str:
    """sha256 of the adapter round ``round`` starts from (fedavg) under the fallback rule."""
    initial = node.store.get_meta("initial_sha256") or ""
    return lineage(node.store, initial, round, node.cfg.model.fallback_after)[-1]


def reference_sha(node: Node, round: int) -> str:
    """The adapter every update of ``round`` is measured against: the effective base (fedavg), or
    the federation's initial adapter that every ``exact`` update starts from."""
    if node.cfg.model.strategy == "exact":
        return node.store.get_meta("initial_sha256") or ""
    return effective_base(node, round)
