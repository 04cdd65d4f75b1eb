"""Participant: train from the round's base adapter, write the canonical update, commit, announce.

The update file names its author, round and federation (issue 12, B6), and it is announced only
once its commit is mined: a hash seen on gossip can no longer be committed first by someone else,
and a copy committed by someone else is excluded by everyone because the file names its author.
"""

from __future__ import annotations

import logging
import time

import trio

from chain.errors import ContractRevert
from node.context import Node
from node.recovery import effective_lineage
from node.state import UpdateRecord
from node.transfer import cid_of, fetch_adapter, global_holders, publish
from training.adapter_io import update_metadata
from training.errors import TrainingError

log = logging.getLogger("medfed.participant")


async def ensure_base(node: Node, round: int, base_sha: str, deadline: float) -> str:
    """The round's base (the current global adapter) as a local weights path."""
    path = node.artifacts.weights(base_sha)
    if path is not None:
        return str(path)
    log.info("round %d: fetching the base adapter %s", round, base_sha[:12])
    return await fetch_adapter(node, base_sha, "global", round - 1, global_holders(node), deadline)


async def global_history(node: Node, before: int, deadline: float) -> list[str]:
    """`exact`: weights paths of the global adapters round ``before`` builds on, in order: those of
    the finalized rounds before it, less any the fallback abandoned (node/recovery.py); fetched
    from the aggregator or committers of each round if we do not hold them."""
    out = []
    for k, _ in effective_lineage(node, before)[1:]:
        o = node.store.outcome(k)
        assert o is not None and o.status == "finalized"
        sub = node.store.submission(k, o.attempt)
        owners = ([sub.aggregator] if sub else []) + [c.member for c in node.store.commits(k)]
        n_inputs = len(sub.included) if sub else 1
        out.append(await fetch_adapter(node, o.sha256, "global", k, owners, deadline, n_inputs, o.cid))
    return out


async def train_update(node: Node, round: int, base_sha: str, deadline: float) -> UpdateRecord:
    """Train this site's update for ``round`` once; a restarted node reuses the stored one."""
    rec = node.store.update(round)
    if rec is not None and node.artifacts.has(rec.sha256):
        log.info("round %d: update %s already trained (resuming)", round, rec.sha256[:12])
        return rec
    if node.learner.exact:
        # exact: merge every earlier global delta into the base weights, train a fresh LoRA from the
        # federation's initial adapter (its update is rank r again)
        history = await global_history(node, round, deadline)
        base = await ensure_base(node, round, node.store.get_meta("initial_sha256") or base_sha, deadline)
    else:
        history = []
        base = await ensure_base(node, round, base_sha, deadline)
    dp = None
    if node.privacy is not None:
        # DP-SGD samples from every training row (the accounting's sampling rate assumes it)
        questions = list(node.data.train)
        dp = node.privacy.plan.dp_config()
        node.privacy.record(round)  # counted before it runs: a crash mid-training still counts
    else:
        questions = node.data.round_window(round, node.cfg.data.train_per_round)
    log.info(
        "round %d: training on %d private questions from base %s (%d steps%s)",
        round,
        len(questions),
        base_sha[:12],
        dp.steps if dp else node.cfg.model.max_steps,
        f", DP-SGD: epsilon spent with this round {node.privacy.spent():.3f} of "
        f"{node.privacy.plan.target_epsilon:g}"
        if dp and node.privacy
        else "",
    )
    node.set_status(activity=f"training round {round}")
    t0, cpu0 = time.monotonic(), time.process_time()
    binding = update_metadata(node.me, round, node.federation_id)
    sha, n, folder = await trio.to_thread.run_sync(
        node.learner.train, base, questions, round, history, binding, dp
    )
    seconds = time.monotonic() - t0
    await trio.to_thread.run_sync(node.artifacts.adopt_dir, sha, folder, "update", round)
    node.store.record_update(round, sha, n, seconds)
    node.store.add_timing(round, "train", seconds)
    # the process's CPU seconds while training (all threads): bench/round.py subtracts them from
    # the node's CPU over the round to get what coordination cost this site
    node.store.add_timing(round, "train_cpu", time.process_time() - cpu0)
    log.info("round %d: trained update %s on %d samples in %.1f s", round, sha[:12], n, seconds)
    await node.behaviour.reached(node, "trained", round)
    rec = node.store.update(round)
    assert rec is not None
    return rec


async def _own_update_valid(node: Node, round: int, rec: UpdateRecord) -> bool:
    """Our update passes the checks we apply to everyone's; a bad one is never committed (and
    this says so once, not at every tick)."""
    from node.roles.aggregator import check_update

    if (round, rec.sha256) in node.memo.refused_own:
        return False
    weights = node.artifacts.weights(rec.sha256)
    try:
        if weights is None:
            raise TrainingError(f"update {rec.sha256[:12]} is not in the adapter store")
        await trio.to_thread.run_sync(check_update, node, round, str(weights))
    except TrainingError as exc:
        node.memo.refused_own.add((round, rec.sha256))
        log.error(
            "round %d: NOT committing our update %s: it fails the federation's checks: %s",
            round,
            rec.sha256[:12],
            exc,
        )
        return False
    return True


async def commit(node: Node, round: int, rec: UpdateRecord) -> None:
    """Commit the update's sha256 on-chain, exactly once per round, then announce it.

    Only our own commit on the chain counts as success: a revert (whatever its text) is never
    taken for it; the chain's committer list is read again and decides."""
    committers = {a.lower() for a in await node.chain(node.client.committers)}
    if node.me in committers:
        # the chain is the truth: we committed before a crash that lost the local record
        log.info("round %d: chain already has our commit; not committing again", round)
        node.store.mark_committed(round, None)
        await publish(node, rec.sha256, "update", round)
        return
    if not await _own_update_valid(node, round, rec):
        return
    rec = await node.behaviour.update_to_commit(node, round, rec)
    weights = node.artifacts.weights(rec.sha256)
    assert weights is not None
    cid = await trio.to_thread.run_sync(cid_of, weights)
    await node.behaviour.reached(node, "committing", round)
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.commit_update, round, rec.sha256, cid, rec.num_samples)
    except ContractRevert as exc:
        committers = {a.lower() for a in await node.chain(node.client.committers)}
        if node.me in committers:  # e.g. a retried transaction whose first try was mined
            log.info("round %d: commit reverted (%s) but the chain has our commit", round, exc.reason)
            node.store.mark_committed(round, None)
            await publish(node, rec.sha256, "update", round)
            return
        log.error("round %d: our commit of %s was REFUSED: %s", round, rec.sha256[:12], exc.reason)
        raise
    node.store.add_timing(round, "chain", time.monotonic() - t0)
    await node.behaviour.reached(node, "committed", round)
    node.store.mark_committed(round, tx.tx_hash)
    node.set_status(activity=f"committed round {round}")
    log.info(
        "round %d: committed update %s (%d samples), tx %s",
        round,
        rec.sha256[:12],
        rec.num_samples,
        tx.tx_hash,
    )
    # announce only now: before the commit is mined, a copier could commit our hash first
    await publish(node, rec.sha256, "update", round)


async def serve_only(node: Node, round: int) -> None:
    """issue 20: take part in ``round`` without an update (our privacy budget is spent):
    `serveRound` once, so that we are drawn as aggregator and verify like any committer, and are
    paid as verifier/aggregator only. Like `commit`, only the chain's committer list decides
    whether it is done; a refusal is said once per round and tried again at the next tick."""
    if node.store.serving(round):
        return
    committers = {a.lower() for a in await node.chain(node.client.committers)}
    if node.me in committers:  # sent before a crash that lost the local record
        node.store.add_server(round, node.me)
        return
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.serve_round, round)
    except ContractRevert as exc:
        committers = {a.lower() for a in await node.chain(node.client.committers)}
        if node.me in committers:
            node.store.add_server(round, node.me)
            return
        if round not in node.memo.serve_refused:
            node.memo.serve_refused.add(round)
            log.warning("round %d: serveRound refused: %s", round, exc.reason)
        return
    node.store.add_timing(round, "chain", time.monotonic() - t0)
    node.store.add_server(round, node.me)
    node.set_status(activity=f"serving round {round} as verifier/aggregator (no update)")
    log.info("round %d: serving as verifier/aggregator only (no update), tx %s", round, tx.tx_hash)
