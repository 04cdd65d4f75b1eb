"""The round, as the protocol tells it: open -> train -> commit -> elect -> aggregate -> verify ->
finalize -> report.

`tick` is called every poll interval, and again at once when the round moved on. It first records
the chain's new events (the source of truth: commits, submissions, outcomes, published peers) in
the state store, then reads the live round and performs the one step that is due for this node.
Every step is idempotent and checks the store and the chain before acting, so a node killed at
any point resumes where it was: it never trains twice, never commits twice, never votes twice.

Housekeeping transactions that anyone may send (advance, finalize, openRound) are staggered by
the node's rank among the members, and each node re-reads the round before sending, so a
healthy federation sends each of them about once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
import time
from pathlib import Path

from chain import types as ev
from chain.errors import ChainError, ContractRevert
from chain.types import Phase, RoundInfo
from node.context import Node, write_metrics_file
from node.errors import ArtifactError, Retired
from node.metric_report import Figures, report_values
from node.recovery import effective_base
from node.roles.aggregator import aggregate_and_submit
from node.roles.participant import commit, global_history, serve_only, train_update
from node.roles.verifier import prefetch_updates, verify_and_vote
from node.state import Commit, Outcome, Submission
from node.transfer import fetch_adapter, pin, publish
from training.errors import TrainingError

log = logging.getLogger("medfed.round")


def _hex(b: bytes) -> str:
    return bytes(b).hex()


# ------------------------------------------------------------------------------------ events
async def sync_events(node: Node) -> None:
    """Record every coordinator event since the last processed block (resumes after a restart)."""
    start = max(node.store.last_block + 1, node.cfg.chain.start_block)
    latest = await node.chain(node.client.block_number)
    if latest < start:
        return
    from chain.events import EventReader

    events = await node.chain(EventReader(node.client).read, start, latest)
    for e in events:
        await _apply_or_skip(node, e)
    node.store.set_last_block(latest)


async def _apply_or_skip(node: Node, e: ev.ChainEvent) -> None:
    """`apply_event`, except that an event this node cannot fold in (adversarial content it did not
    foresee) is skipped with one warning instead of stopping the sync at its block forever. A
    chain or disk failure still propagates: the page is read again on the next tick."""
    try:
        await apply_event(node, e)
    except (ChainError, OSError, sqlite3.OperationalError, Retired):
        raise  # a failure to retry, or the members' decision that this node stops
    except Exception as exc:
        log.warning(
            "skipping chain event %s in block %d, tx %s: %s: %s",
            e.name,
            e.block_number,
            e.tx_hash,
            type(exc).__name__,
            exc,
        )


async def apply_event(node: Node, e: ev.ChainEvent) -> None:
    """Fold one chain event into the local view (and log it in words)."""
    s = node.store
    if (mon := getattr(node, "monitor", None)) is not None:
        mon.event(e, node.me)
    if isinstance(e, ev.RoundOpened):
        node.commit_deadlines[e.round] = node.to_unix(e.commit_deadline)
        log.info("chain: round %d opened from global %s", e.round, _hex(e.base_sha256)[:12])
    elif isinstance(e, ev.UpdateCommitted):
        s.add_commit(Commit(e.round, e.member.lower(), _hex(e.sha256), e.cid, e.num_samples))
        log.info(
            "chain: round %d update %s committed by %s (%d samples)",
            e.round,
            _hex(e.sha256)[:12],
            e.member,
            e.num_samples,
        )
        own = s.update(e.round) if e.member.lower() == node.me else None
        if own is not None and not own.committed and own.sha256 == _hex(e.sha256):
            s.mark_committed(e.round, e.tx_hash)  # a crash lost the local record; the chain has it
            log.info("round %d: the chain shows our commit (tx %s); recorded it", e.round, e.tx_hash)
        if e.member.lower() != node.me:
            await node.behaviour.saw_update(node, e.round, e.member.lower(), _hex(e.sha256), "chain")
    elif isinstance(e, ev.ServingOnly):
        s.add_server(e.round, e.member)
        log.info("chain: round %d: %s serves as verifier/aggregator only (no update)", e.round, e.member)
    elif isinstance(e, ev.AggregatorElected):
        node.commits_closed.add(e.round)  # elected = the commit phase is over (early or at the deadline)
        node.elected[e.round] = e.aggregator.lower()
        log.info("chain: round %d attempt %d aggregator %s", e.round, e.attempt, e.aggregator)
    elif isinstance(e, ev.ElectionSeed):
        log.info("chain: round %d election seed %s (block %d)", e.round, _hex(e.seed)[:12], e.seed_block)
    elif isinstance(e, ev.UpdateExcluded):
        log.info(
            "chain: round %d: %s's update was left out by %s (%s)", e.round, e.member, e.aggregator, e.reason
        )
    elif isinstance(e, ev.AggregateSubmitted):
        s.add_submission(
            Submission(
                e.round,
                e.attempt,
                e.aggregator.lower(),
                _hex(e.sha256),
                e.cid,
                tuple(a.lower() for a in e.included),
                tuple(a.lower() for a in e.invalid),
            )
        )
        log.info(
            "chain: round %d attempt %d aggregate %s by %s includes %d updates, names %d invalid",
            e.round,
            e.attempt,
            _hex(e.sha256)[:12],
            e.aggregator,
            len(e.included),
            len(e.invalid),
        )
    elif isinstance(e, ev.VoteCast):
        log.info(
            "chain: round %d attempt %d %s by %s",
            e.round,
            e.attempt,
            "approval" if e.approve else "REJECTION",
            e.voter,
        )
    elif isinstance(e, ev.AttemptFailed):
        log.warning("chain: round %d attempt %d failed: %s", e.round, e.attempt, e.reason)
    elif isinstance(e, ev.RoundFinalized):
        s.set_outcome(Outcome(e.round, "finalized", e.attempt, _hex(e.global_sha256), e.global_cid, ""))
        log.info(
            "chain: round %d FINALIZED at attempt %d: new global adapter %s",
            e.round,
            e.attempt,
            _hex(e.global_sha256)[:12],
        )
    elif isinstance(e, ev.RoundFailed):
        node.commits_closed.add(e.round)
        s.set_outcome(Outcome(e.round, "failed", e.attempts, "", "", e.reason))
        log.warning("chain: round %d FAILED after %d attempts: %s", e.round, e.attempts, e.reason)
    elif isinstance(e, ev.RewardPaid):
        if e.to.lower() == node.me:
            log.info("chain: round %d paid us %d (%s)", e.round, e.amount, e.role)
    elif isinstance(e, ev.PeerPublished):
        s.set_peer(e.member, e.peer_id, e.multiaddrs)
        if e.member.lower() != node.me and node.host is not None and e.multiaddrs:
            await _dial(node, list(e.multiaddrs))
    elif isinstance(e, ev.MetricsReported):
        node.reported.setdefault(e.round, set()).add(e.member.lower())
    elif isinstance(e, ev.MemberAdded | ev.MemberRemoved):
        node.members = frozenset(a.lower() for a in await node.chain(node.client.members))
        log.info("chain: member %s %s", e.member, "admitted" if isinstance(e, ev.MemberAdded) else "removed")
        if isinstance(e, ev.MemberRemoved) and e.member.lower() == node.me and node.me not in node.members:
            raise Retired(f"{e.member} was removed from the federation by its members' vote: the node stops")
    elif isinstance(e, ev.Successor):
        from node.daemon import moved_message
        from node.errors import HandedOver

        # issue 21: the daemon leaves this coordinator and follows the successor (or stops, saying why)
        raise HandedOver(moved_message(node.cfg, e.coordinator), e.coordinator, e.proposal)
    elif isinstance(e, ev.ProposalCreated):
        if e.kind in {k.value for k in ev.ProposalKind}:  # the contract emits no other, a lying RPC might
            what = ev.Proposal(
                e.id, ev.ProposalKind(e.kind), e.param, e.target, e.value, 0, ev.ProposalStatus.OPEN, 0, 0, 0
            ).describe()
        else:
            what = f"unknown kind {e.kind}"
        log.info("chain: proposal %d by %s: %s", e.id, e.proposer, what)
    elif isinstance(e, ev.ProposalVoted):
        log.info(
            "chain: proposal %d: %s votes %s (%d yes, %d no, %d needed)",
            e.id,
            e.voter,
            "yes" if e.support else "no",
            e.yes,
            e.no,
            e.required,
        )
    elif isinstance(e, ev.ProposalPassed | ev.ProposalRejected | ev.ProposalExecuted | ev.ProposalVoid):
        word = {"ProposalPassed": "passed", "ProposalRejected": "rejected", "ProposalExecuted": "applied"}
        extra = " (queued for the next round)" if isinstance(e, ev.ProposalPassed) and e.queued else ""
        log.info("chain: proposal %d %s%s", e.id, word.get(e.name, "void"), extra)
    elif isinstance(e, ev.ParamChanged):
        name = ev.PARAM_NAMES[e.param] if e.param < len(ev.PARAM_NAMES) else str(e.param)
        log.info("chain: parameter %s is now %d", name, e.value)


async def _dial(node: Node, addrs: list[str]) -> None:
    assert node.host is not None
    try:
        await node.host.connect(addrs, keep=True)
    except Exception as exc:  # the reconnect loop keeps trying
        log.info("peer %s not reachable yet: %s", addrs[0] if addrs else "?", exc)


# ------------------------------------------------------------------------------- the machine
async def tick(node: Node) -> bool:
    """Look at the chain once and do whatever this node owes the live round.

    Returns True when the live round moved on meanwhile (another round, phase or attempt: our own
    transaction or someone else's), so the caller looks again at once instead of after a poll."""
    await sync_events(node)
    info = await node.chain(node.client.round_info)
    r = info.round
    node.enter_round(r)
    if r:
        # the contract moves the deadline to the close when every member committed early
        due = node.to_unix(info.commit_deadline)
        node.commit_deadlines[r] = min(node.commit_deadlines.get(r, due), due)
        if info.phase != Phase.COMMIT:
            node.commits_closed.add(r)
    node.set_status(round=r, phase=info.phase.name.lower(), attempt=info.attempt)
    if info.phase in (Phase.NONE, Phase.FINALIZED, Phase.FAILED):
        if info.phase == Phase.FINALIZED:
            await report(node, r)
        await open_next(node, info)
    elif info.phase == Phase.COMMIT and node.now() < node.to_unix(info.commit_deadline):
        await train_and_commit(node, info)
        await catch_up_report(node, r)
    elif info.phase in (Phase.COMMIT, Phase.AGGREGATE):
        await elect_and_aggregate(node, info)
    elif info.phase == Phase.VERIFY:
        await verify_and_finalize(node, info)
    now = await node.chain(node.client.round_info)
    # an early close (our own commit was the last one) moves the commit deadline, not the phase:
    # it counts as a move too, so the election is nudged at once rather than a poll later
    return _moment(now) != _moment(info)


def _moment(info: RoundInfo) -> tuple[int, int, int, int]:
    return (info.round, int(info.phase), info.attempt, info.commit_deadline)


async def open_next(node: Node, info: RoundInfo) -> None:
    """open: start round r+1 once round r is final, this node has reported on r, and so has every
    committer of r (or ``fetch_patience_s`` has passed: a crashed member does not hold the federation).

    Waiting for the others' reports starts the next commit phase when every site is ready to train,
    so a site still evaluating the last global adapter does not lose part of its commit window and
    the round's time is its work (the evaluations happen between rounds)."""
    rc = node.cfg.rounds
    r = info.round
    if not rc.auto_open or (r == 0 and not rc.open_first_round) or (rc.last_round and r >= rc.last_round):
        node.set_status(role="idle")
        return
    if info.phase == Phase.FINALIZED and node.me in node.members and not _reported(node, r):
        return
    if info.phase == Phase.FINALIZED:
        first = node.memo.first_due.setdefault(("reports", r), node.now())
        took_part = {c.member for c in node.store.commits(r)} | set(node.store.servers(r))
        busy = took_part - node.reported.get(r, set()) - {node.me}
        if busy and node.now() < first + rc.fetch_patience_s:
            node.set_status(activity=f"waiting for {len(busy)} sites to report on round {r}")
            return
    if not await _due(node, ("open", r), 0.0):
        return
    if (await node.chain(node.client.round_info)).round != r:
        return
    t0 = time.monotonic()
    try:
        tx = await node.chain(node.client.open_round)
        node.store.add_timing(r, "chain", time.monotonic() - t0)
        log.info("round %d: opened, tx %s", r + 1, tx.tx_hash)
    except ContractRevert as exc:
        log.debug("openRound not needed: %s", exc.reason)


async def train_and_commit(node: Node, info: RoundInfo) -> None:
    """train + commit: this site's update for the open round, exactly once."""
    r = info.round
    if node.me not in node.members:
        node.set_status(role="observer")
        return
    node.set_status(role="participant")
    if not node.behaviour.trains(node, r):
        return
    deadline = node.to_unix(info.commit_deadline)
    rec = node.store.update(r)
    if rec is not None and rec.committed:
        return
    if r in node.memo.training_failed:
        return
    # (a stored update is reused, not trained again: no new spend)
    fresh = rec is None or not node.artifacts.has(rec.sha256)
    if node.privacy is not None and fresh and not node.privacy.may_train(r):
        # issue 20: no update, but a committer slot: drawn as aggregator, votes, paid as such
        node.set_status(activity="privacy budget spent: verifying and aggregating only")
        await serve_only(node, r)
        return
    on_chain = _hex((await node.chain(node.client.global_adapter)).sha256)
    base = effective_base(node, r)  # exact: the last global merged (its updates start from the initial)
    if base != on_chain and r not in node.memo.fallback_said:
        node.memo.fallback_said.add(r)
        log.warning(
            "round %d: training from the last healthy global adapter %s%s, not the chain's %s: "
            "%d failed rounds in a row abandon a global ([aggregation] fallback_after)",
            r,
            base[:12],
            " (exact: the deltas up to it merged, abandoned ones un-merged)" if node.learner.exact else "",
            on_chain[:12],
            node.cfg.model.fallback_after,
        )
    try:
        rec = await train_update(node, r, base, deadline)
    except TrainingError as exc:  # said once; the round goes on without our update
        node.memo.training_failed.add(r)
        log.error("round %d: not committing an update this round: %s", r, exc)
        return
    if node.now() >= deadline - 1.0:
        log.warning(
            "round %d: update ready %.0f s after the commit deadline; not committing "
            "(ask for a longer commit phase or lower [training] max_steps / [data] train_per_round)",
            r,
            node.now() - deadline,
        )
        return
    await commit(node, r, rec)


async def elect_and_aggregate(node: Node, info: RoundInfo) -> None:
    """elect + aggregate: the contract draws the aggregator (a seed from the hash of the last
    commit's block, issue 12) in the first transaction after that block that touches the round;
    this node reads it from the chain once elected, and aggregates if it is the one.

    Before the election every node nudges `advance`, staggered by rank; after an early close the
    member whose commit closed the phase, and the member `aggregatorOf` predicts (the draw is
    fixed once the closing block is mined), send it at once, so the round goes on within a poll."""
    r = info.round
    await pin_own_update(node, r)
    committers = [a.lower() for a in await node.chain(node.client.committers)]
    if info.phase == Phase.COMMIT:
        # the election happens on-chain (its seed is not known here before it): make it happen
        # (anyone may; staggered), also when too few committed (the round then fails)
        node.set_status(role="verifier" if node.me in committers else "observer")
        early = bool(committers) and len(committers) >= len(node.members)
        at_once = early and node.me in {committers[-1], (info.aggregator or "").lower()}
        await _nudge(node, info, "advance", node.to_unix(info.commit_deadline), staggered=not at_once)
        return
    deadline = node.to_unix(info.aggregate_deadline)
    aggregator = (info.aggregator or "").lower()
    if aggregator == node.me:
        node.set_status(role="aggregator")
        if node.now() < deadline:
            await aggregate_and_submit(node, r, info.attempt, deadline)
        return
    node.set_status(role="verifier" if node.me in committers else "observer")
    if info.phase == Phase.AGGREGATE and node.me in committers:
        # fetch the inputs now, while the aggregator works: verification then starts with them held
        await prefetch_updates(node, r, deadline)
    await _nudge(node, info, "advance", deadline)


async def pin_own_update(node: Node, r: int) -> None:
    """With an IPFS API configured, pin our update once the commit phase is over (not before:
    nobody may copy it earlier), so it can be fetched by CID if we go offline."""
    rec = node.store.update(r)
    if not node.cfg.p2p.ipfs_api or rec is None or not rec.committed or rec.sha256 in node.memo.pinned:
        return
    path = node.artifacts.weights(rec.sha256)
    if path is not None:
        node.memo.pinned.add(rec.sha256)
        await pin(node, path)


async def verify_and_finalize(node: Node, info: RoundInfo) -> None:
    """verify + finalize: committers other than the aggregator recompute and vote; anyone finalizes."""
    r = info.round
    committers = [a.lower() for a in await node.chain(node.client.committers)]
    sub = node.store.submission(r, info.attempt)
    deadline = node.to_unix(info.verify_deadline)
    if sub is None:
        return  # the event arrives with the next sync
    voted_now = False
    if node.me in committers and sub.aggregator != node.me and node.now() < deadline:
        node.set_status(role="verifier")
        voted_now = await verify_and_vote(node, sub, deadline)
        info = await node.chain(node.client.round_info)
        if info.phase != Phase.VERIFY or info.round != r:
            return
    if decidable_early(info.n_committers, info.approvals, info.rejections):
        # the voter whose vote decided it finalizes at once; the others keep their stagger
        await _nudge(node, info, "finalize", 0.0, staggered=not voted_now)
    else:
        await _nudge(node, info, "advance", deadline)


def decidable_early(n_committers: int, approvals: int, rejections: int) -> bool:
    """Whether the contract's `_decision` decides before the verify deadline (issue 12 rules):
    approvals >= 2/3 of the eligible verifiers, two or more rejections that are more than 1/3 of
    them, or every eligible verifier voted."""
    eligible = n_committers - 1
    a, rj = approvals, rejections
    return (
        eligible <= 0
        or (a * 3 >= eligible * 2 and a > 0)
        or (rj >= 2 and rj * 3 > eligible)
        or a + rj >= eligible
    )


async def report(node: Node, r: int) -> None:
    """report: evaluate the round's new global adapter on our held-out data; reportMetrics once."""
    if node.me not in node.members or _reported(node, r):
        return
    outcome = node.store.outcome(r)
    if outcome is None or outcome.status != "finalized":
        return
    m = node.store.metrics(r)
    if m is None:
        owners = [sub.aggregator] if (sub := node.store.submission(r, outcome.attempt)) else []
        owners += [c.member for c in node.store.commits(r)]
        n_inputs = len(sub.included) if sub else 1
        try:
            path = await fetch_adapter(
                node,
                outcome.sha256,
                "global",
                r,
                owners,
                node.now() + node.cfg.rounds.fetch_patience_s,
                n_inputs,
                cid=outcome.cid,
            )
        except ArtifactError as exc:
            log.warning("round %d: cannot get the new global adapter yet: %s", r, exc)
            return
        await publish(node, outcome.sha256, "global", r)
        node.set_status(activity=f"evaluating round {r}")
        t0 = time.monotonic()
        history = []
        if node.learner.exact:  # the global model is base + every earlier delta + this one
            history = await global_history(node, r, node.now() + node.cfg.rounds.fetch_patience_s)
        fig = await _evaluate(node, path, history)
        node.store.add_timing(r, "evaluate", time.monotonic() - t0)
        _record(node, r, outcome.sha256, fig)
        log.info(
            "round %d: global %s: %s on %d held-out %s rows",
            r,
            outcome.sha256[:12],
            fig.describe(),
            fig.n,
            node.data.name,
        )
        m = node.store.metrics(r)
        assert m is not None
    t0 = time.monotonic()
    try:
        tx = await node.chain(
            node.client.report_metrics, r, m.eval_set_hash, round(m.accuracy * 1_000_000), m.n
        )
        node.store.add_timing(r, "chain", time.monotonic() - t0)
        node.store.mark_metrics_reported(r, tx.tx_hash)
        log.info("round %d: reported %s on-chain, tx %s", r, node.data.kind, tx.tx_hash)
    except ContractRevert as exc:
        log.info("round %d: metrics not reported: %s", r, exc.reason)
        node.store.mark_metrics_reported(r, None)  # a later round was already reported: nothing to do
    write_metrics_file(node.cfg.state_dir, node.store)
    node.set_status(activity="idle")


async def catch_up_report(node: Node, live: int) -> None:
    """After committing to (or serving, issue 20) round ``live``, report on the last finalized
    round if we have not yet."""
    rec = node.store.update(live)
    if (rec is None or not rec.committed) and not node.store.serving(live):
        return
    g = await node.chain(node.client.global_adapter)
    if g.round and not _reported(node, g.round):
        await report(node, g.round)


async def evaluate_initial(node: Node) -> None:
    """Held-out accuracy of the initial adapter (round 0), once: the baseline of every report."""
    if node.store.metrics(0) is not None:
        return
    g = await node.chain(node.client.global_adapter)
    if g.round != 0:
        return
    sha = _hex(g.sha256)
    path = node.artifacts.weights(sha)
    if path is None:
        return
    node.set_status(activity="evaluating the initial adapter")
    fig = await _evaluate(node, str(path))
    _record(node, 0, sha, fig)
    node.store.mark_metrics_reported(0, None)
    write_metrics_file(node.cfg.state_dir, node.store)
    log.info("initial adapter %s: %s on %d held-out %s rows", sha[:12], fig.describe(), fig.n, node.data.name)


async def _evaluate(node: Node, weights: str, history: list[str] | None = None) -> Figures:
    import trio

    fig: Figures = await trio.to_thread.run_sync(
        node.learner.evaluate, weights, list(node.data.eval), history or []
    )
    # a broken (poisoned) global scores nothing; it does not stop reports
    if fig.kind == "mc" and not math.isfinite(fig.accuracy):
        log.warning(
            "held-out accuracy of %s is %s; reporting 0", Path(weights).parent.name[:12], fig.accuracy
        )
        fig = dataclasses.replace(fig, accuracy=0.0)
    elif fig.kind != "mc" and not math.isfinite(fig.loss):
        log.warning(
            "held-out loss of %s is %s; reporting it as infinite", Path(weights).parent.name[:12], fig.loss
        )
        fig = dataclasses.replace(fig, loss=math.inf)
    return fig


def _record(node: Node, r: int, sha: str, fig: Figures) -> None:
    """Store an evaluation in the form reportMetrics sends (see node.metric_report)."""
    spend = None
    if node.privacy is not None:  # epsilon spent by our trainings up to this round, and the budget
        spend = (node.privacy.spent(up_to_round=r), node.privacy.plan.target_epsilon)
    eval_hash, ppm = report_values(fig, node.data.eval_set_hash, spend)
    if (mon := getattr(node, "monitor", None)) is not None:
        mon.evaluated(fig.kind, fig.accuracy if fig.kind == "mc" else fig.loss)
    node.store.record_metrics(r, sha, ppm / 1_000_000, fig.n, eval_hash)
    write_metrics_file(node.cfg.state_dir, node.store)


def _reported(node: Node, r: int) -> bool:
    m = node.store.metrics(r)
    return m is not None and m.reported


# --------------------------------------------------------------------------- housekeeping
async def _due(node: Node, key: tuple[object, ...], at: float, staggered: bool = True) -> bool:
    """True once ``at`` + rank * stagger has passed (``at`` = 0: counted from first sight)."""
    first = node.memo.first_due.setdefault(key, node.now())
    start = max(at, first) if at else first
    return node.now() >= start + (node.rank() * node.cfg.rounds.stagger_s if staggered else 0.0)


async def _nudge(node: Node, info: RoundInfo, what: str, at: float, staggered: bool = True) -> None:
    """Send advance/finalize for the live round when due, unless someone already moved it."""
    key = (what, info.round, info.attempt, int(info.phase))
    if node.now() < at or not await _due(node, key, at, staggered):
        return
    now = await node.chain(node.client.round_info)
    if (now.round, now.phase, now.attempt) != (info.round, info.phase, info.attempt):
        return
    fn = node.client.finalize if what == "finalize" else node.client.advance
    t0 = time.monotonic()
    try:
        tx = await node.chain(fn, info.round)
        node.store.add_timing(info.round, "chain", time.monotonic() - t0)
        log.info("round %d: sent %s (%s), tx %s", info.round, what, info.phase.name.lower(), tx.tx_hash)
    except ContractRevert as exc:
        log.debug("%s not needed: %s", what, exc.reason)
