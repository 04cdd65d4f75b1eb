"""Verifier: fetch the same inputs, recompute the aggregate bit for bit, compare sha256, vote once.

Reject only on evidence that is the same for everyone: an included update whose bytes are invalid
(or name another author), or a recomputation that gives another sha256. Approve only on an exact
match. Abstain (no vote) when an included update cannot be obtained in time: that is not evidence
against the aggregator (it may be our own network). An update left out is not by itself a reason
to reject (issue 12, B4/B5): we cannot tell "withheld from the aggregator" from "omitted"; the
contract records every exclusion (UpdateExcluded). Except (issue 24, node/censorship.py) when we
held it, valid, before the attempt's hold cutoff: the aggregator, asking every committer until
later, could have had it from us, so leaving it out is censorship. Updates with no evidence of
training (training/bounds.py `unconfirmed`) must be named invalid, never included.

Invalid claims (issue 12): the aggregator names, in its submission, the committers whose updates
it found invalid; they forfeit the round if it is accepted. Each claim is checked like an included
update: a claimed-invalid update that we obtain (with its committed sha256, from its author or the
aggregator, which must serve what it claims) and find valid means the aggregator lied: reject. A
claimed-invalid update we cannot obtain leaves the claim unchecked: abstain (never approve a claim
we could not check; an honest aggregator serves every update it names invalid).
"""

from __future__ import annotations

import logging
import time

import trio

from chain.errors import ContractRevert
from chain.types import Phase
from node.censorship import early_holds, evidence, fetchable, phase_times
from node.context import Node
from node.roles.aggregator import check_update, collect_updates, compute_aggregate, unconfirmed_updates
from node.state import Submission
from node.transfer import publish, update_fetch_limit
from training.errors import TrainingError

log = logging.getLogger("medfed.verifier")


async def judge(node: Node, sub: Submission, deadline: float) -> tuple[bool | None, str]:
    """Recompute ``sub`` from its included updates and check its invalid claims; return
    (approve, reason), approve None = abstain."""
    included, invalid = set(sub.included), set(sub.invalid)
    commits = [c for c in node.store.commits(sub.round) if c.member in included]
    claimed = [c for c in node.store.commits(sub.round) if c.member in invalid]
    if len(claimed) < len(invalid):
        return None, "an update claimed invalid is not among the commits we have seen yet"
    left_out = sorted(c.member for c in node.store.commits(sub.round) if c.member not in included | invalid)
    if left_out:
        log.info("round %d attempt %d: left out by %s: %s", sub.round, sub.attempt, sub.aggregator, left_out)
    if invalid:
        log.info(
            "round %d attempt %d: claimed invalid by %s: %s",
            sub.round,
            sub.attempt,
            sub.aggregator,
            sorted(invalid),
        )
    t0 = time.monotonic()
    everything = await collect_updates(
        node, sub.round, commits + claimed, deadline, also_from=(sub.aggregator,)
    )
    node.store.add_timing(sub.round, "transfer", time.monotonic() - t0)
    collected = [c for c in everything if c.commit.member in included]
    checked = [c for c in everything if c.commit.member in invalid]
    for c in collected:
        if c.path is None and c.final:
            return False, f"included update of {c.commit.member} is invalid: {c.problem}"
    for c in collected:
        if c.path is None:
            return None, f"included update of {c.commit.member} cannot be checked yet: {c.problem}"
    # issue 24: the agreement rule over the aggregator's candidates (included + claimed invalid
    # that are valid on their own): included ones must pass it, claimed ones must fail it
    candidates = collected + [c for c in checked if c.path is not None]
    failed = await trio.to_thread.run_sync(unconfirmed_updates, node, sub.round, candidates)
    for c in collected:
        if c.commit.member in failed:
            return False, f"included update of {c.commit.member} is invalid: {failed[c.commit.member]}"
    for c in checked:
        if c.path is not None and c.commit.member not in failed:
            return False, f"update of {c.commit.member} is claimed invalid but is valid"
    for c in checked:
        if c.path is None and not c.final:
            return None, f"the invalid claim on {c.commit.member} cannot be checked yet: {c.problem}"
    if not collected:
        return False, "the aggregate includes no committed update"
    await fetch_left_out(node, sub, deadline)
    why = await censored(node, sub)
    if why:
        return False, why
    t0 = time.monotonic()
    state = await trio.to_thread.run_sync(compute_aggregate, node, sub.round, collected)
    sha = await trio.to_thread.run_sync(node.artifacts.put_state, state, "aggregate", sub.round)
    node.store.add_timing(sub.round, "verify", time.monotonic() - t0)
    if sha != sub.sha256:
        return False, f"recomputed aggregate {sha[:12]} != submitted {sub.sha256[:12]}"
    await publish(node, sha, "aggregate", sub.round)
    confirmed = f"; {len(checked)} invalid claims confirmed" if checked else ""
    return True, f"recomputed {sha[:12]} from {len(collected)} updates: identical{confirmed}"


async def fetch_left_out(node: Node, sub: Submission, deadline: float) -> None:
    """Until the attempt's hold cutoff, fetch the updates ``sub`` left out as unavailable that we
    do not hold yet: one we can fetch before the cutoff was available to the aggregator too
    (node/censorship.py). Our prefetch stops at the submission, so without this an aggregator that
    submits at once, before the verifiers hold the updates, could leave one out unchallenged."""
    judged = set(sub.included) | set(sub.invalid) | {sub.aggregator, node.me}
    missing = [
        c
        for c in node.store.commits(sub.round)
        if c.member not in judged and (sub.round, c.member, c.sha256) not in node.memo.held_at
    ]
    if not missing:
        return
    info = await node.chain(node.client.round_info)
    if (info.round, info.attempt) != (sub.round, sub.attempt):
        return
    cutoff, _ = await phase_times(node, info)
    until = min(deadline, cutoff)
    if node.now() >= until:
        return
    log.info(
        "round %d attempt %d: fetching the %d left-out updates until the hold cutoff (%.1f s)",
        sub.round,
        sub.attempt,
        len(missing),
        until - node.now(),
    )
    await collect_updates(node, sub.round, missing, until)


async def censored(node: Node, sub: Submission) -> str:
    """Why ``sub`` left out an update we know was available to its aggregator (node/censorship.py);
    empty when we hold no such evidence (also when the attempt is no longer the live one)."""
    holds = early_holds(node, sub)
    own = node.store.update(sub.round)
    if own is not None and any(update.startswith("our update") for _, update, _ in holds):
        path = node.artifacts.weights(own.sha256)
        valid = fetchable(node, str(path) if path else None, update_fetch_limit(node))
        if valid:
            try:
                await trio.to_thread.run_sync(check_update, node, sub.round, str(path))
            except TrainingError:
                valid = False
        if not valid:  # nobody may fetch it, or it is invalid: not evidence of anything
            holds = [h for h in holds if not h[1].startswith("our update")]
    if not holds:
        return ""
    info = await node.chain(node.client.round_info)
    if (info.round, info.attempt) != (sub.round, sub.attempt):
        return ""
    cutoff, _ = await phase_times(node, info)
    return evidence(holds, cutoff)


async def prefetch_updates(node: Node, round: int, deadline: float) -> None:
    """While the elected aggregator works, fetch (concurrently) the round's committed updates that
    verification will need, once per round; what cannot be had now is retried by `judge`. Stops as
    soon as the round leaves the aggregation phase (a submission): it never eats into the
    verification window."""
    if round in node.memo.prefetched or not node.behaviour.prefetches(node, round):
        return
    node.memo.prefetched.add(round)
    commits = [c for c in node.store.commits(round) if node.artifacts.weights(c.sha256) is None]
    if not commits:
        return
    node.set_status(activity=f"fetching the {len(commits)} updates of round {round} to verify")
    log.info("round %d: fetching %d updates while the aggregator works", round, len(commits))
    t0 = time.monotonic()

    async def until_phase_moves(scope: trio.CancelScope) -> None:
        while True:
            # a poll, or sooner when a coordinator event is mined (the submission, say)
            with trio.move_on_after(node.cfg.rounds.poll_interval_s):
                await node.wake_event().wait()
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
        verdict, reason = await node.behaviour.verdict(node, sub, lambda: judge(node, sub, deadline - 3.0))
        if verdict is None:
            log.warning("round %d attempt %d: not voting (yet): %s", sub.round, sub.attempt, reason)
            return False
        await node.behaviour.reached(node, "voting", sub.round, sub.attempt)
        approve: bool = verdict
        node.store.record_vote(sub.round, sub.attempt, approve, reason)
        rec = node.store.vote(sub.round, sub.attempt)
        assert rec is not None
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.vote, sub.round, rec.approve)
    except ContractRevert as exc:
        # only our vote on-chain counts as done, never the text of a refusal
        if await node.chain(node.client.has_voted, node.address):
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
