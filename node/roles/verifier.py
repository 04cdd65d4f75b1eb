"""Verifier: fetch the same inputs, recompute the aggregate bit for bit, compare sha256, vote once.

Reject when an included update cannot be obtained or is invalid (the aggregate cannot be
checked), when an update left out was available and valid to us, or when our recomputation
gives another sha256. Approve only on an exact match.
"""

from __future__ import annotations

import logging
import time

import trio

from chain.errors import ContractRevert
from chain.types import Phase
from node.context import Node
from node.roles.aggregator import collect_updates, compute_aggregate
from node.state import Submission
from node.transfer import publish

log = logging.getLogger("medfed.verifier")


async def judge(node: Node, sub: Submission, deadline: float) -> tuple[bool, str]:
    """Recompute ``sub`` from the committed updates; return (approve, reason)."""
    commits = node.store.commits(sub.round)
    included = set(sub.included)
    t0 = time.monotonic()
    collected = await collect_updates(node, sub.round, commits, deadline)
    node.store.add_timing(sub.round, "transfer", time.monotonic() - t0)
    for c in collected:
        if c.commit.member in included and c.path is None:
            return False, f"included update of {c.commit.member} cannot be checked: {c.problem}"
        if c.commit.member not in included and c.path is not None:
            return False, f"a valid update of {c.commit.member} was left out"
    usable = [c for c in collected if c.commit.member in included]
    if not usable:
        return False, "the aggregate includes no committed update"
    t0 = time.monotonic()
    state = await trio.to_thread.run_sync(compute_aggregate, node, usable)
    sha = await trio.to_thread.run_sync(node.artifacts.put_state, state, "aggregate", sub.round)
    node.store.add_timing(sub.round, "verify", time.monotonic() - t0)
    if sha != sub.sha256:
        return False, f"recomputed aggregate {sha[:12]} != submitted {sub.sha256[:12]}"
    await publish(node, sha, "aggregate", sub.round)
    return True, f"recomputed {sha[:12]} from {len(usable)} updates: identical"


_prefetched: set[int] = set()


async def prefetch_updates(node: Node, round: int, deadline: float) -> None:
    """While the elected aggregator works, fetch (concurrently) the round's committed updates that
    verification will need, once per round; what cannot be had now is retried by `judge`. Stops as
    soon as the round leaves the aggregation phase (a submission): it never eats into the
    verification window."""
    if round in _prefetched:
        return
    _prefetched.add(round)
    commits = [c for c in node.store.commits(round) if node.artifacts.weights(c.sha256) is None]
    if not commits:
        return
    node.set_status(activity=f"fetching the {len(commits)} updates of round {round} to verify")
    log.info("round %d: fetching %d updates while the aggregator works", round, len(commits))
    t0 = time.monotonic()

    async def until_phase_moves(scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(node.cfg.rounds.poll_interval_s)
            info = await node.chain(node.client.round_info)
            if info.round != round or info.phase != Phase.AGGREGATE:
                log.info("round %d: stopped prefetching: the round moved on", round)
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_phase_moves, nursery.cancel_scope)
        await collect_updates(node, round, commits, deadline - 3.0)
        nursery.cancel_scope.cancel()
    node.store.add_timing(round, "transfer", time.monotonic() - t0)


async def verify_and_vote(node: Node, sub: Submission, deadline: float) -> bool:
    """Vote on ``sub`` exactly once (the verdict is stored before it is sent; the chain is asked too).
    True when this call sent the vote."""
    rec = node.store.vote(sub.round, sub.attempt)
    if rec is not None and rec.sent:
        return False
    if await node.chain(node.client.has_voted, node.address):
        log.info("round %d attempt %d: chain already has our vote", sub.round, sub.attempt)
        if rec is not None:
            node.store.mark_vote_sent(sub.round, sub.attempt, None)
        return False
    if rec is None:
        node.set_status(activity=f"verifying round {sub.round} attempt {sub.attempt}")
        log.info(
            "round %d attempt %d: verifying aggregate %s by %s",
            sub.round,
            sub.attempt,
            sub.sha256[:12],
            sub.aggregator,
        )
        approve, reason = await judge(node, sub, deadline - 3.0)
        node.store.record_vote(sub.round, sub.attempt, approve, reason)
        rec = node.store.vote(sub.round, sub.attempt)
        assert rec is not None
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.vote, sub.round, rec.approve)
    except ContractRevert as exc:
        if "already voted" in exc.reason:
            node.store.mark_vote_sent(sub.round, sub.attempt, None)
        else:
            log.warning("round %d attempt %d: vote refused: %s", sub.round, sub.attempt, exc.reason)
        return False
    node.store.add_timing(sub.round, "chain", time.monotonic() - t0)
    node.store.mark_vote_sent(sub.round, sub.attempt, tx.tx_hash)
    node.set_status(activity=f"voted on round {sub.round} attempt {sub.attempt}")
    log.info(
        "round %d attempt %d: voted %s (%s)",
        sub.round,
        sub.attempt,
        "APPROVE" if rec.approve else "REJECT",
        rec.reason,
    )
    return True
