"""Aggregator (when elected): fetch every committed update, check it, aggregate deterministically, submit.

The same `collect_updates` and `compute_aggregate` are what verifiers run, so an honest
aggregator and an honest verifier holding the same inputs produce the same bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import trio

from chain.errors import ContractRevert
from node.censorship import held, phase_times
from node.context import Node
from node.errors import ArtifactError
from node.learning import federation_rules
from node.recovery import reference_sha
from node.state import Commit
from node.transfer import cid_of, fetch_adapter, global_holders, publish, update_fetch_limit
from training.adapter_io import check_update_binding, read_adapter, validate_adapter
from training.aggregation import AggregationInput, aggregate
from training.bounds import AGREEMENT_MIN_UPDATES, agreement, bounded_inputs, check_update_bounds, unconfirmed
from training.errors import AdapterInvalid, TrainingError

log = logging.getLogger("medfed.aggregator")
# Transfers in flight at once when collecting a round's updates: enough to overlap the per-stream
# latency and use the link, few enough that memory, file handles and the providers' upload stay
# bounded (each transfer holds at most one 1 MiB chunk; files are capped at max_adapter_mb).
MAX_PARALLEL_FETCHES = 8


@dataclass(frozen=True)
class Collected:
    """The outcome of trying to obtain one committed update."""

    commit: Commit
    path: str | None
    problem: str  # empty when path is a valid adapter
    # the problem is in the bytes (same for everyone), not in getting them: the update is INVALID.
    # Only bytes with the committed sha256 can be: an answer `too_large`, or bytes with another
    # hash, prove nothing about the committed file (a dishonest author could serve the aggregator
    # junk and the verifiers the real file), so they leave the update unavailable, not invalid.
    final: bool = False


async def collect_updates(
    node: Node,
    round: int,
    commits: list[Commit],
    deadline: float,
    also_from: tuple[str, ...] = (),
    parallel: int = MAX_PARALLEL_FETCHES,
    ask_until: float = 0.0,
) -> list[Collected]:
    """Fetch and check every commit concurrently (at most ``parallel`` transfers at a time) until
    ``deadline`` or the fetch patience, whichever comes first; report each one's fate.

    ``also_from``: members to ask besides each update's committer (a verifier asks the aggregator,
    which must serve every update it included). An update whose file names another author, round
    or federation than its commit is unusable (issue 12, B6: a copied or replayed hash).
    ``ask_until``: keep asking at least until then (the aggregator: past the hold cutoff, see
    node/censorship.py), the fetch patience notwithstanding."""
    results: dict[str, Collected] = {}
    give_up = min(deadline, max(node.now() + node.cfg.rounds.fetch_patience_s, ask_until))
    limiter = trio.CapacityLimiter(max(1, parallel))
    await ensure_reference(node, round, deadline)
    # several members may commit the same hash (a copy): fetch each file once, from all of them
    by_sha: dict[str, list[Commit]] = {}
    for c in commits:
        by_sha.setdefault(c.sha256, []).append(c)

    # last resort for every update: the round's other committers (each fetches every update to
    # verify, and serves what it holds; fetched updates are not announced, see node.transfer)
    everyone = sorted({c.member for c in node.store.commits(round)} - {node.me})

    async def one(sha: str, same: list[Commit]) -> None:
        members = [c.member for c in same]
        owners = [*members, *(a for a in also_from if a not in members)]
        async with limiter:
            try:
                path = await fetch_adapter(
                    node, sha, "update", round, owners, give_up, cid=same[0].cid, fallback=everyone
                )
            except ArtifactError as exc:
                for c in same:
                    log.warning("round %d: update of %s unusable: %s", round, c.member, exc)
                    results[c.member] = Collected(c, None, str(exc), final="not a valid adapter" in str(exc))
                return
            size, limit = os.path.getsize(path), update_fetch_limit(node)
            if size > limit:
                # held (our own update, say) but larger than anyone may fetch: others cannot check
                # it, so it is unavailable to them, never claimed invalid (issue 12)
                for c in same:
                    why = f"update {sha[:12]} is too large: {size} bytes, fetches stop at {limit}"
                    log.warning("round %d: update of %s unusable: %s", round, c.member, why)
                    results[c.member] = Collected(c, None, why)
                return
            for c in same:
                # held files too (our own update, one fetched earlier): every update gets the same
                # checks, once: the verdict on these bytes (content-addressed, checked against the
                # sha256 on arrival) for this author, round and reference cannot change, so the
                # prefetch's verdict is the verification's
                key = (node.federation_id, round, c.member, sha, reference_sha(node, round))
                verdict = node.memo.checked.get(key)
                if verdict is None:
                    try:
                        check_update_binding(path, c.member, round, node.federation_id)
                        await trio.to_thread.run_sync(check_update, node, round, path)
                        verdict = ""
                    except TrainingError as exc:  # AdapterInvalid, bounds: the bytes are bad for everyone
                        verdict = f"invalid: {exc}"
                    node.memo.checked[key] = verdict
                if verdict:
                    log.warning("round %d: update of %s is %s", round, c.member, verdict)
                    results[c.member] = Collected(c, None, verdict, final=True)
                else:
                    results[c.member] = Collected(c, path, "")
                    if c.member != node.me:
                        held(node, round, c.member, sha)

    async with trio.open_nursery() as nursery:
        for sha, same in by_sha.items():
            nursery.start_soon(one, sha, same)
    return [results[c.member] for c in commits]


async def ensure_reference(node: Node, round: int, deadline: float) -> str:
    """Hold the adapter the round's updates are measured against (fetched if need be)."""
    sha = reference_sha(node, round)
    path = node.artifacts.weights(sha)
    if path is not None:
        return str(path)
    return await fetch_adapter(node, sha, "global", round - 1, global_holders(node), deadline)


def reference_state(node: Node, round: int) -> dict[str, np.ndarray]:
    """The tensors of the round's reference adapter (see node/recovery.py); must be held."""
    sha = reference_sha(node, round)
    path = node.artifacts.weights(sha)
    if path is None:
        raise ArtifactError(f"round {round}: the reference adapter {sha[:12]} is not held yet")
    return read_adapter(path)


def check_update(node: Node, round: int, path: str) -> None:
    """Raise TrainingError (AdapterInvalid) unless ``path`` is a valid update of this federation
    for ``round``: shape and layout, finite, and within the federation's bounds (training/bounds.py).
    The checks every member applies to every update, its own included."""
    validate_adapter(path, node.spec, node.cfg.model.max_adapter_mb << 20)
    rules = federation_rules(node.cfg)
    try:
        check_update_bounds(read_adapter(path), reference_state(node, round), rules.bounds)
    except TrainingError as exc:
        raise AdapterInvalid(f"{path}: {exc}") from None


def unconfirmed_updates(node: Node, round: int, candidates: list[Collected]) -> dict[str, str]:
    """Members among ``candidates`` (each valid on its own) whose update carries no evidence of
    training (issue 24, free-riders: training/bounds.py `unconfirmed`), with the reason."""
    states = {c.commit.member: read_adapter(c.path) for c in candidates if c.path is not None}
    reference, bounds = reference_state(node, round), federation_rules(node.cfg).bounds
    if len(states) >= AGREEMENT_MIN_UPDATES:  # the numbers an operator needs to choose min_agreement
        said = ", ".join(f"{m[:10]} {cos:.3f}" for m, cos in agreement(states, reference).items())
        rule = bounds.min_agreement
        log.info("round %d: agreement of %d updates (min_agreement %g): %s", round, len(states), rule, said)
    return unconfirmed(states, reference, bounds)


def compute_aggregate(node: Node, round: int, usable: list[Collected]) -> dict[str, np.ndarray]:
    """Deterministic aggregate of the usable updates: sample counts capped and each update
    clipped against the round's median distance (training/bounds.py), then the strategy."""
    assert all(u.path is not None for u in usable)
    inputs = [
        AggregationInput(u.commit.member, u.commit.num_samples, read_adapter(u.path))  # type: ignore[arg-type]
        for u in usable
    ]
    rules = federation_rules(node.cfg)
    inputs = bounded_inputs(inputs, reference_state(node, round), rules.bounds)
    return aggregate(node.cfg.model.strategy, inputs)


async def aggregate_and_submit(node: Node, round: int, attempt: int, deadline: float) -> None:
    """Run the elected aggregator's job for ``(round, attempt)``, at most one submission."""
    mine = node.store.aggregate(round, attempt)
    if mine is not None and mine[2]:
        return
    if node.store.submission(round, attempt) is not None:
        if mine is not None:
            node.store.mark_aggregate_submitted(round, attempt, None)
        return
    await node.behaviour.reached(node, "aggregating", round, attempt)
    node.set_status(activity=f"aggregating round {round} attempt {attempt}")
    if mine is None:
        commits = node.store.commits(round)
        log.info("round %d attempt %d: elected aggregator; fetching %d updates", round, attempt, len(commits))
        t0 = time.monotonic()
        info = await node.chain(node.client.round_info)
        _, ask_until = await phase_times(node, info) if info.round == round else (0.0, 0.0)
        # keep a margin for the transaction itself; ask for a missing update past the hold cutoff
        # (a verifier that held it before the cutoff rejects an aggregate that leaves it out)
        collected = await collect_updates(node, round, commits, deadline - 3.0, ask_until=ask_until)
        node.store.add_timing(round, "transfer", time.monotonic() - t0)
        collected = [
            dataclasses.replace(c, path=None, problem="left out by our choice")
            if c.path is not None and node.behaviour.leaves_out(node, round, attempt, c.commit.member)
            else c
            for c in collected
        ]
        usable = [c for c in collected if c.path is not None]
        # issue 24: an update the others do not confirm carries no training (a free-rider): invalid
        failed = await trio.to_thread.run_sync(unconfirmed_updates, node, round, usable)
        collected = [
            dataclasses.replace(c, path=None, problem=f"invalid: {failed[c.commit.member]}", final=True)
            if c.commit.member in failed
            else c
            for c in collected
        ]
        usable = [c for c in collected if c.path is not None]
        # issue 12: updates proven invalid are named on-chain (their authors forfeit the round if
        # the verifiers agree); the others that could not be had are simply left out (unavailable)
        invalid = sorted(c.commit.member for c in collected if c.path is None and c.final)
        for c in collected:
            if c.problem:
                why = "invalid" if c.final else "unavailable"
                log.warning("round %d: leaving out %s (%s): %s", round, c.commit.member, why, c.problem)
        if not usable:
            log.error("round %d attempt %d: no usable update; cannot aggregate", round, attempt)
            return
        t0 = time.monotonic()
        state = await trio.to_thread.run_sync(compute_aggregate, node, round, usable)
        state = node.behaviour.aggregate_to_submit(node, round, attempt, state)
        sha = await trio.to_thread.run_sync(node.artifacts.put_state, state, "aggregate", round)
        node.store.add_timing(round, "aggregate", time.monotonic() - t0)
        included = sorted(u.commit.member for u in usable)
        node.store.record_aggregate(round, attempt, sha, included, invalid)
        log.info(
            "round %d attempt %d: aggregate %s of %d updates; %d named invalid",
            round,
            attempt,
            sha[:12],
            len(included),
            len(invalid),
        )
    else:
        sha, included, _ = mine
        invalid = node.store.aggregate_invalid(round, attempt)
    await publish(node, sha, "aggregate", round)
    weights = node.artifacts.weights(sha)
    assert weights is not None
    cid = await trio.to_thread.run_sync(cid_of, weights)
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.submit_aggregate, round, sha, cid, list(included), invalid)
    except ContractRevert as exc:
        log.warning("round %d attempt %d: submitAggregate refused: %s", round, attempt, exc.reason)
        return
    node.store.add_timing(round, "chain", time.monotonic() - t0)
    node.store.mark_aggregate_submitted(round, attempt, tx.tx_hash)
    node.set_status(activity=f"submitted aggregate of round {round}")
    log.info("round %d attempt %d: submitted aggregate %s, tx %s", round, attempt, sha[:12], tx.tx_hash)
