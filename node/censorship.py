"""Censorship evidence (issue 24): an update left out as unavailable that a verifier held early.

An aggregator may leave an update out as unavailable (its author withheld it, B4/B5); that alone is
never a reason to reject. But fetchers fall back to every other committer, and committers serve
what they hold: an update that a verifier held, checked valid, before the attempt's **hold
cutoff** was available to the aggregator, which keeps asking every committer until the cutoff
plus a margin. A verifier holding such evidence rejects the aggregate that left the update out.

Times are the attempt's aggregation phase, read from the chain (`aggregateDeadline` minus
`aggregateDuration`, the same numbers for everyone):

- hold cutoff ``C = start + HOLD_FRACTION x aggregateDuration``;
- an honest aggregator asks for every missing update until at least ``C + MARGIN_FRACTION x
  aggregateDuration`` (its last round of asks reaches every committer that held it at ``C``).

Evidence, per left-out committer ``m`` (not the aggregator):
- ``m`` is another member: we fetched ``m``'s update with its committed sha256 and found it valid
  before ``C`` (we serve it on);
- ``m`` is us: before ``C`` we let a committer other than the aggregator fetch our update, and the
  update is one anyone may fetch (within the fetch limit) and valid by our own checks.

A withholder that serves nobody before the aggregate (B4) or a member back late (B5) has no such
evidence; one that serves the verifiers but not the aggregator has its update fetched from them.
"""

from __future__ import annotations

import os

from chain.types import RoundInfo
from node.context import Node
from node.state import Submission

HOLD_FRACTION = 0.3  # of the aggregation phase: evidence counts only if held before this point
MARGIN_FRACTION = 0.2  # the honest aggregator asks again until this much later


async def phase_times(node: Node, info: RoundInfo) -> tuple[float, float]:
    """(hold cutoff, the aggregator's last ask) of the live attempt, unix seconds."""
    params = node.memo.params
    if params is None:
        params = node.memo.params = await node.chain(node.client.params)
    duration = params.aggregate_duration
    start = node.to_unix(info.aggregate_deadline - duration)
    span = node.to_unix(info.aggregate_deadline) - start
    return start + HOLD_FRACTION * span, start + (HOLD_FRACTION + MARGIN_FRACTION) * span


def held(node: Node, round: int, member: str, sha256: str) -> None:
    """Record that we hold ``member``'s valid update of ``round`` from now (first time only)."""
    node.memo.held_at.setdefault((round, member, sha256), node.now())


def handed(node: Node, round: int, requester: str, sha256: str) -> None:
    """Record that we let ``requester`` fetch update ``sha256`` of ``round`` (first time only);
    only our own update's records are read (`early_holds`)."""
    node.memo.handed_at.setdefault((round, requester, sha256), node.now())


def early_holds(node: Node, sub: Submission) -> list[tuple[float, str, str]]:
    """Our records that bear on ``sub``'s left-out updates: (time, which update, who holds it),
    earliest first; each is evidence if its time is before the attempt's hold cutoff. Our own
    update counts only if a committer other than the aggregator fetched it (the caller checks
    that it is valid and fetchable)."""
    judged = set(sub.included) | set(sub.invalid) | {sub.aggregator}
    commits = node.store.commits(sub.round)
    # a serving-only committer (issue 20) verifies too: its fetch of our update is evidence
    committers = {c.member for c in commits} | set(node.store.servers(sub.round))
    out = []
    for c in commits:
        if c.member in judged:
            continue
        if c.member != node.me:
            t = node.memo.held_at.get((sub.round, c.member, c.sha256))
            if t is not None:
                out.append((t, f"{c.member}'s update {c.sha256[:12]}", "we held it"))
            continue
        for (r, who, sha), t in node.memo.handed_at.items():
            if r == sub.round and sha == c.sha256 and who != sub.aggregator and who in committers:
                out.append((t, f"our update {c.sha256[:12]}", f"{who} fetched it from us"))
    return sorted(out)


def evidence(holds: list[tuple[float, str, str]], cutoff: float) -> str:
    """The censorship reason for the earliest hold before ``cutoff`` (empty: none)."""
    for t, update, holder in holds:
        if t <= cutoff:
            return (
                f"left out {update} as unavailable, but {holder} {cutoff - t:.1f} s before the hold "
                "cutoff, to serve to the aggregator (censorship)"
            )
    return ""


def fetchable(node: Node, path: str | None, limit: int) -> bool:
    """Whether a held file is one other members may fetch (not over the fetch limit)."""
    return path is not None and os.path.getsize(path) <= limit
