"""TEST-ONLY dishonest nodes: a `node.behaviour.Behaviour` that misbehaves in precise, reproducible
ways named by a fault spec. The e2e harness starts a node with it (`medfed-node start --behaviour
<this file>:from_faults=<spec>`, see `behaviour_spec`); the node's own code holds only the honest one.

    from_faults("crash-after-commit@1,tamper-aggregate@1.1")

Each item is ``<fault>`` or ``<fault>@<round>`` or ``<fault>@<round>.<attempt>``:

- ``crash-after-train``: exit right after the update is trained and stored, before committing it.
- ``crash-after-commit``: exit right after the commit transaction is confirmed, before the store
  records it (the restarted node must learn from the chain that it already committed).
- ``crash-as-aggregator``: exit when it finds itself the elected aggregator, before submitting.
- ``tamper-aggregate``: as aggregator, submit an aggregate with one value altered.
- ``serve-wrong-bytes``: act as a hostile provider: announce every other member's committed
  update and serve random bytes for it.
- ``front-run``: never train; commit the first other member's update hash seen (on gossip or
  on-chain) as our own, claiming 16 samples (issue 12, B6).
- ``slow-commit``: wait 3 s before sending the commit transaction (a chain whose mempool is slow
  to mine, which gives a front-runner its window).
- ``always-reject``: as verifier, vote reject whatever the recomputation says (issue 12, B3).
- ``withhold-from-aggregator``: serve our update to nobody until the round's aggregate is
  submitted (so no verifier holds a copy it could pass on to the aggregator), then to every
  member except the elected aggregator (selective serving, issue 12, B4).
- ``blind-approve``: as verifier, vote approve without fetching or recomputing anything (and
  fetch nothing while the aggregator works): a lazy verifier (issue 12, B7).
- ``slow-verify``: as verifier, send the verdict ``SLOW_VERIFY_S`` after reaching it (an honest
  verifier whose recomputation takes as long as a real model's: the tiny model's is quicker
  than a blind approver's poll).
- ``pad-update``: commit an update of valid tensors followed by ``PAD_BYTES`` of trailing bytes
  (hostile member B1; skips the node's own check of its update, as a modified node would).
- ``huge-update``: commit an update whose LoRA B values are all ``HUGE_VALUE`` (finite, B2).
- ``free-ride-base``, ``free-ride-noise``, ``free-ride-replay`` (issue 24, free-riders; each
  claims ``FREE_RIDE_SAMPLES`` samples, four times an honest tiny site's): commit, bound to our own
  address and the round like an honest update, the round's reference adapter itself; the
  reference plus Gaussian noise of the norm an honest update has (our own trained one's); a replay
  of another member's update of an earlier round that we hold (from verifying it), re-bound
  (the noise when we hold none). The update we trained is never committed.
- ``censor``: as aggregator at attempt 0, leave out the update of the other committer with the
  fewest claimed samples (then the lowest address: never a free-rider above) as unavailable,
  although we hold it (issue 24).
- ``no-prefetch``: as verifier, fetch nothing while the aggregator works, then judge honestly (a
  verifier slower than an aggregator that submits at once: it holds none of the updates yet).

A crash fault fires once per state dir (a marker file), so the restarted node runs honestly; it
exits with `localnet.federation.RESTART_EXIT_CODE`, which the harness restarts.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from chain.errors import ContractRevert
from node.behaviour import HonestBehaviour, Verdict
from node.context import Node
from node.state import Submission, UpdateRecord
from p2p.messages import Announcement
from training.adapter_io import read_adapter, read_metadata, sha256_file

KNOWN = frozenset(
    {
        "crash-after-train",
        "crash-after-commit",
        "crash-as-aggregator",
        "tamper-aggregate",
        "serve-wrong-bytes",
        "front-run",
        "slow-commit",
        "always-reject",
        "withhold-from-aggregator",
        "blind-approve",
        "slow-verify",
        "pad-update",
        "huge-update",
        "free-ride-base",
        "free-ride-noise",
        "free-ride-replay",
        "censor",
        "no-prefetch",
    }
)
FREE_RIDES = ("free-ride-base", "free-ride-noise", "free-ride-replay")
FREE_RIDE_SAMPLES = 64  # free-ride-*: 4x an honest tiny site's 16 (the most samples_factor counts)
CRASH_EXIT_CODE = 17  # = localnet.federation.RESTART_EXIT_CODE (not imported: the node stays light)
CRASH_AT = {
    "trained": "crash-after-train",
    "committed": "crash-after-commit",
    "aggregating": "crash-as-aggregator",
}
HUGE_VALUE = 1e30  # huge-update: every LoRA B value of the committed update
SLOW_VERIFY_S = 2.0  # slow-verify: delay between a verdict and its vote
SLOW_COMMIT_S = 3.0  # slow-commit: delay before the commit transaction
PAD_BYTES = 40 << 20  # pad-update: trailing bytes appended to a valid update (under max_adapter_mb)
log = logging.getLogger("medfed.hostile")


@dataclass(frozen=True)
class Fault:
    """One injected fault, optionally restricted to a round (and attempt)."""

    name: str
    round: int | None = None
    attempt: int | None = None

    def matches(self, round: int, attempt: int = 0) -> bool:
        """Whether this fault applies to that round/attempt."""
        return (self.round is None or self.round == round) and (
            self.attempt is None or self.attempt == attempt
        )


def parse(spec: str) -> tuple[Fault, ...]:
    """Parse a fault spec; unknown names are a ValueError (a test bug)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, where = item.partition("@")
        if name not in KNOWN:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(KNOWN))}")
        rnd, _, att = where.partition(".")
        out.append(Fault(name, int(rnd) if rnd else None, int(att) if att else None))
    return tuple(out)


def behaviour_spec(faults: str) -> str:
    """The `medfed-node start --behaviour` value for a node with these faults."""
    return f"{Path(__file__).resolve()}:from_faults={faults}"


def from_faults(spec: str) -> FaultyBehaviour:
    """The factory `--behaviour` names."""
    return FaultyBehaviour(parse(spec))


class FaultyBehaviour(HonestBehaviour):
    """Honest, except where one of its faults applies."""

    def __init__(self, items: tuple[Fault, ...]) -> None:
        self.items = items
        self.garbage: set[str] = set()  # sha256 we serve random bytes for (serve-wrong-bytes)
        if items:
            log.warning("TEST FAULT INJECTION ACTIVE: %s", ",".join(f.name for f in items))

    def active(self, name: str, round: int, attempt: int = 0) -> bool:
        """Whether fault ``name`` applies now."""
        return any(f.name == name and f.matches(round, attempt) for f in self.items)

    # ------------------------------------------------------------------------ steps
    async def reached(self, node: Node, step: str, round: int, attempt: int = 0) -> None:
        if step in CRASH_AT:
            self._crash(node, CRASH_AT[step], round, attempt)
        elif step == "committing" and self.active("slow-commit", round):
            log.warning("TEST FAULT slow-commit: the commit transaction waits 3 s (a slow mempool)")
            await trio.sleep(SLOW_COMMIT_S)
        elif step == "voting" and self.active("slow-verify", round, attempt):
            log.warning("TEST FAULT slow-verify: voting %.0f s after the verdict", SLOW_VERIFY_S)
            await trio.sleep(SLOW_VERIFY_S)

    def _crash(self, node: Node, name: str, round: int, attempt: int) -> None:
        """Exit the process now if crash fault ``name`` applies and has not fired yet in this state dir."""
        if not self.active(name, round, attempt):
            return
        marker = node.cfg.state_dir / f"fault-fired-{name}-{round}-{attempt}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("fired\n")
        log.warning("TEST FAULT %s: exiting now (round %d attempt %d)", name, round, attempt)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)

    # --------------------------------------------------------------------- committing
    def trains(self, node: Node, round: int) -> bool:
        return not self.active("front-run", round)  # a front-runner only commits copies

    async def saw_update(self, node: Node, round: int, member: str, sha256: str, via: str) -> None:
        if via == "chain" and self.active("serve-wrong-bytes", round):
            await self._offer_garbage(node, round, member, sha256)
        if self.active("front-run", round):
            await self._front_run(node, round, sha256, "the chain" if via == "chain" else via)

    async def update_to_commit(self, node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
        if self.active("pad-update", round):
            rec = await trio.to_thread.run_sync(pad_update, node, round, rec)
        if self.active("huge-update", round):
            rec = await trio.to_thread.run_sync(huge_update, node, round, rec)
        for name in FREE_RIDES:
            if self.active(name, round):
                rec = await trio.to_thread.run_sync(free_ride, node, round, rec, name)
        return rec

    async def _front_run(self, node: Node, round: int, sha: str, seen_on: str) -> None:
        """Commit another member's update hash as ours (16 samples)."""
        if node.me in {c.member for c in node.store.commits(round)}:
            return
        rec = node.store.update(round)
        if rec is not None and rec.committed:
            return
        log.warning("TEST FAULT front-run: committing %s (seen on %s) as our update", sha[:12], seen_on)
        try:
            tx = await node.chain(node.client.commit_update, round, sha, "", 16)
        except ContractRevert as exc:
            log.warning("TEST FAULT front-run: our copy was refused: %s", exc.reason)
            return
        node.store.record_update(round, sha, 16, 0.0)
        node.store.mark_committed(round, tx.tx_hash)
        log.warning("TEST FAULT front-run: committed a copy of %s, tx %s", sha[:12], tx.tx_hash)

    # ----------------------------------------------------------------- aggregating, voting
    def aggregate_to_submit(
        self, node: Node, round: int, attempt: int, state: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if not self.active("tamper-aggregate", round, attempt):
            return state
        log.warning("TEST FAULT tamper-aggregate: altering the aggregate of round %d", round)
        out = dict(state)
        key = sorted(out)[0]
        arr = out[key].copy()
        arr.flat[0] += np.float32(0.125)
        out[key] = arr
        return out

    def leaves_out(self, node: Node, round: int, attempt: int, member: str) -> bool:
        if attempt != 0 or not self.active("censor", round, attempt):
            return False
        others = [c for c in node.store.commits(round) if c.member != node.me]
        victim = min(others, key=lambda c: (c.num_samples, c.member)).member if others else ""
        if member != victim:
            return False
        log.warning("TEST FAULT censor: leaving out %s's update as unavailable (we hold it)", member)
        return True

    def prefetches(self, node: Node, round: int) -> bool:
        # a lazy verifier fetches nothing; a slow one has nothing yet when the aggregate comes
        return not (self.active("blind-approve", round) or self.active("no-prefetch", round))

    async def verdict(self, node: Node, sub: Submission, judge: Callable[[], Awaitable[Verdict]]) -> Verdict:
        if self.active("blind-approve", sub.round, sub.attempt):
            log.warning(
                "TEST FAULT blind-approve: approving round %d attempt %d aggregate %s without "
                "fetching or recomputing it",
                sub.round,
                sub.attempt,
                sub.sha256[:12],
            )
            verdict: Verdict = (True, "TEST FAULT blind-approve")
        else:
            verdict = await judge()
        if self.active("always-reject", sub.round, sub.attempt):
            log.warning("TEST FAULT always-reject: rejecting whatever the recomputation says")
            verdict = (False, "TEST FAULT always-reject")
        return verdict

    # ------------------------------------------------------------------------- serving
    def offers(self, node: Node, sha256: str, kind: str, round: int) -> bool:
        # a hostile provider keeps serving its garbage after it got the real file
        return sha256 not in self.garbage

    def serves_to(self, node: Node, requester: str, sha256: str, kind: str, round: int) -> bool:
        if kind != "update" or not self.active("withhold-from-aggregator", round):
            return True
        # nobody until an aggregate of the round is on-chain (a verifier holding a copy would pass
        # it on to the aggregator), then all but the aggregator
        submitted = any(node.store.submission(round, k) is not None for k in range(8))
        if submitted and node.elected.get(round, requester) != requester:
            return True
        log.warning("TEST FAULT withhold-from-aggregator: refusing %s our update", requester)
        return False

    async def _offer_garbage(self, node: Node, round: int, member: str, sha: str) -> None:
        """Claim another member's update and serve random bytes for it."""
        assert node.host is not None
        fake = node.artifacts.scratch / f"wrong-bytes-{sha}"
        if not fake.exists():
            fake.write_bytes(os.urandom(4096))
        self.garbage.add(sha)
        node.served[sha] = ("update", round)
        node.host.serve(sha, fake)
        log.warning("TEST FAULT serve-wrong-bytes: offering garbage for %s's update %s", member, sha[:12])
        try:
            await node.host.announce(
                Announcement.new("update", round, sha, fake.stat().st_size, node.peer_id)
            )
        except Exception as exc:
            log.info("announce failed: %r", exc)


def pad_update(node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
    """pad-update: the update's valid tensors followed by PAD_BYTES of trailing bytes (B1)."""
    done = node.store.get_meta(f"fault-pad-update-{round}")
    if done == rec.sha256:
        return rec
    weights = node.artifacts.weights(rec.sha256)
    assert weights is not None
    tmp = node.artifacts.scratch / f"padded-{uuid.uuid4().hex}"
    with weights.open("rb") as src, tmp.open("wb") as out:
        out.write(src.read())
        zeros = bytes(1 << 20)
        for _ in range(PAD_BYTES >> 20):
            out.write(zeros)
    sha = sha256_file(tmp)
    node.artifacts.import_file(sha, tmp, "update", round)
    node.store.record_update(round, sha, rec.num_samples, rec.train_seconds)
    node.store.set_meta(f"fault-pad-update-{round}", sha)
    log.warning(
        "TEST FAULT pad-update: committing %s = update %s + %d trailing bytes",
        sha[:12],
        rec.sha256[:12],
        PAD_BYTES,
    )
    out_rec = node.store.update(round)
    assert out_rec is not None
    return out_rec


def huge_update(node: Node, round: int, rec: UpdateRecord) -> UpdateRecord:
    """huge-update: the update with every LoRA B value set to HUGE_VALUE (finite; B2)."""
    done = node.store.get_meta(f"fault-huge-update-{round}")
    if done == rec.sha256:
        return rec
    weights = node.artifacts.weights(rec.sha256)
    assert weights is not None
    state = read_adapter(weights)
    for key in state:
        if "lora_B" in key:
            state[key] = np.full(state[key].shape, HUGE_VALUE, dtype=np.float32)
    # the same binding (author, round, federation) as the honest update: only the values are hostile
    sha = node.artifacts.put_state(state, "update", round, read_metadata(weights))
    node.store.record_update(round, sha, rec.num_samples, rec.train_seconds)
    node.store.set_meta(f"fault-huge-update-{round}", sha)
    log.warning(
        "TEST FAULT huge-update: committing %s = update %s with B = %g", sha[:12], rec.sha256[:12], HUGE_VALUE
    )
    out_rec = node.store.update(round)
    assert out_rec is not None
    return out_rec


def free_ride(node: Node, round: int, rec: UpdateRecord, how: str) -> UpdateRecord:
    """free-ride-*: an update that carries no training of ours, bound to us and ``round`` (issue 24)."""
    from node.recovery import reference_sha

    done = node.store.get_meta(f"fault-{how}-{round}")
    if done == rec.sha256:
        return rec
    trained = node.artifacts.weights(rec.sha256)
    ref_path = node.artifacts.weights(reference_sha(node, round))
    assert trained is not None and ref_path is not None
    ref, own = read_adapter(ref_path), read_adapter(trained)
    what = "the round's reference adapter"
    state = dict(ref)
    replayed = _held_old_update(node, round) if how == "free-ride-replay" else None
    if replayed is not None:
        state, what = read_adapter(replayed[1]), f"{replayed[0]}'s round {replayed[2]} update"
    elif how != "free-ride-base":
        rng = np.random.default_rng(round)
        norm = math.sqrt(sum(float(np.sum((own[k].astype(np.float64) - ref[k]) ** 2)) for k in ref))
        noise = {k: rng.standard_normal(ref[k].shape) for k in sorted(ref)}
        scale = norm / math.sqrt(sum(float(np.sum(n**2)) for n in noise.values()))
        state = {k: (ref[k].astype(np.float64) + scale * noise[k]).astype(np.float32) for k in ref}
        what = f"the reference + Gaussian noise of norm {norm:.3g} (an honest update's)"
    sha = node.artifacts.put_state(state, "update", round, read_metadata(trained))
    node.store.record_update(round, sha, FREE_RIDE_SAMPLES, rec.train_seconds)
    node.store.set_meta(f"fault-{how}-{round}", sha)
    log.warning(
        "TEST FAULT %s: committing %s = %s, claiming %d samples", how, sha[:12], what, FREE_RIDE_SAMPLES
    )
    out_rec = node.store.update(round)
    assert out_rec is not None
    return out_rec


def _held_old_update(node: Node, round: int) -> tuple[str, Path, int] | None:
    """Another member's update of an earlier round that we hold (fetched to verify it)."""
    for r in range(round - 1, 0, -1):
        for c in node.store.commits(r):
            path = node.artifacts.weights(c.sha256)
            if c.member != node.me and path is not None:
                return c.member, path, r
    return None
