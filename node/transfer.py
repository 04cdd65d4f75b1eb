"""Moving adapters between members: serve and announce ours, fetch others' by sha256, check them.

A fetched file is trusted only after three checks: its sha256 equals the one on-chain (the p2p
layer checks while receiving, and the artifact store checks again), it parses as an adapter of
this federation's shape (keys, shapes, float32, finite, size limit), and it came from a member.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from node.context import Node
from node.errors import ArtifactError
from p2p.errors import FileTooLarge, P2PError
from p2p.messages import Announcement
from training.adapter_io import AdapterSpec, validate_adapter
from training.errors import TrainingError

log = logging.getLogger("medfed.transfer")
PER_PROVIDER_TIMEOUT_S = 20.0
RETRY_FIRST_S = 0.25  # pause before asking the providers again, doubling up to RETRY_MAX_S
RETRY_MAX_S = 1.0


def cid_of(path: Path) -> str:
    """CIDv1 of an adapter file, as IPFS computes it (recorded on-chain beside the sha256)."""
    from p2p.cid import cid_of_file  # imported late: p2p.cid is optional for a node that only trains

    return str(cid_of_file(path))


async def publish(node: Node, sha256: str, kind: str, round: int, announce: bool = True) -> None:
    """Serve a held adapter (access policy applies) and, with ``announce``, announce it on gossip."""
    path = node.artifacts.weights(sha256)
    if path is None or node.host is None:
        return
    if not node.behaviour.offers(node, sha256, kind, round):
        return
    node.served[sha256] = (kind, round)
    node.host.serve(sha256, path)
    if node.cfg.p2p.ipfs_api and kind != "update":
        # updates stay private until the commit phase is over, so only aggregates/globals are pinned here
        await pin(node, path)
    if not announce:
        return
    try:
        await node.host.announce(Announcement.new(kind, round, sha256, path.stat().st_size, node.peer_id))
    except Exception as exc:  # gossip is best effort: chain events remain the source of truth
        log.info("could not announce %s %s: %r", kind, sha256[:12], exc)


async def pin(node: Node, path: Path) -> None:
    """Add (and pin) a file on the configured IPFS node; failures are logged, never fatal."""
    try:
        cid = await trio.to_thread.run_sync(_ipfs_add, node.cfg.p2p.ipfs_api, path)
        log.info("pinned %s on IPFS as %s", path.parent.name[:12], cid)
    except P2PError as exc:
        log.warning("IPFS pinning failed (the node goes on without it): %s", exc)


def providers_for(node: Node, sha256: str, owners: list[str], fallback: list[str] | None = None) -> list[str]:
    """Where to ask for a file: peers that announced it first, then its owners' published addresses,
    then the ``fallback`` members' (who may hold it without having announced it).

    Re-servers go first so the owner is not the bottleneck; a re-server that sends wrong bytes is
    penalised by the p2p layer and the owner is still tried.
    """
    assert node.host is not None
    peers = node.store.peers()
    by_peer_id = {pid: addrs for pid, addrs in peers.values()}
    owner_ids = {peers[o.lower()][0] for o in owners if o.lower() in peers}
    out: list[str] = []
    for pid in node.host.providers_of(sha256):
        if pid in owner_ids or pid == node.peer_id:
            continue
        addrs = [a for a in by_peer_id.get(pid, ()) if a.endswith(pid)]
        out.extend(addrs or [pid])
    listed = set(out)
    for owner in [*owners, *(f for f in fallback or [] if f not in owners)]:
        rec = peers.get(owner.lower())
        if rec is None:
            continue
        owner_pid, owner_addrs = rec
        full = [a for a in owner_addrs if a.endswith(owner_pid)]
        out.extend(a for a in (full or [owner_pid]) if a not in listed)
    return out


def global_holders(node: Node) -> list[str]:
    """Whom to ask for a global adapter besides the peers that announced it: every other member
    (each one fetches, evaluates and re-serves a new global). A node that restarted after the
    announcement (a member back late, issue 12 B5) otherwise knows no provider at all."""
    return sorted(m for m in node.members if m != node.me)


def fetch_limit(node: Node, spec: AdapterSpec) -> int:
    """The most bytes anyone fetches of an adapter of shape ``spec``: more than a valid one can be
    is never accepted (or kept reading)."""
    return min(node.cfg.model.max_adapter_mb << 20, spec.max_file_bytes())


def update_fetch_limit(node: Node) -> int:
    """The most bytes anyone fetches of an update of this federation (see fetch_adapter)."""
    return fetch_limit(node, adapter_spec_for(node, "update"))


def adapter_spec_for(node: Node, kind: str, n_inputs: int = 1) -> AdapterSpec:
    """Expected shape: updates and fedavg aggregates have the federation rank; exact aggregates n*r."""
    if kind in ("aggregate", "global") and node.cfg.model.strategy == "exact" and n_inputs > 1:
        return node.spec.with_rank(node.settings.rank * n_inputs)
    return node.spec


def _ipfs_add(api: str, path: Path) -> str:
    from p2p.ipfs import KuboClient

    return KuboClient(api).add(path)


def _ipfs_cat(api: str, cid: str, dest: Path, max_bytes: int) -> Path:
    from p2p.ipfs import KuboClient

    return KuboClient(api).cat(cid, dest, max_bytes)


async def ipfs_fetch(node: Node, cid: str, sha256: str, max_bytes: int) -> Path | None:
    """Fetch by CID from the configured IPFS (Kubo) API; None when not configured or it fails."""
    api = node.cfg.p2p.ipfs_api
    if not api or not cid:
        return None
    try:
        return await trio.to_thread.run_sync(
            _ipfs_cat, api, cid, node.artifacts.incoming / f"{sha256}.ipfs", max_bytes
        )
    except P2PError as exc:
        log.info("IPFS could not provide %s: %s", cid, exc)
        return None


async def fetch_adapter(
    node: Node,
    sha256: str,
    kind: str,
    round: int,
    owners: list[str],
    deadline: float,
    n_inputs: int = 1,
    cid: str = "",
    fallback: list[str] | None = None,
) -> str:
    """Make sure we hold adapter ``sha256`` (fetch, check, re-serve); return its weights path.

    Asks peers first, then (with ``[p2p] ipfs_api`` and a ``cid``) IPFS. Retries until ``deadline``
    (unix seconds) while providers refuse or fail; raises ArtifactError with every provider's
    reason if it cannot be had in time, or if the file is not a valid adapter.
    """
    held = node.artifacts.weights(sha256)
    if held is not None:
        return str(held)
    assert node.host is not None
    spec = adapter_spec_for(node, kind, n_inputs)
    max_bytes = fetch_limit(node, spec)
    last = "no provider known yet"
    pause = RETRY_FIRST_S
    while True:
        left = deadline - node.now()
        if left <= 0:
            raise ArtifactError(f"could not fetch {kind} {sha256[:12]} of round {round} in time: {last}")
        providers = providers_for(node, sha256, owners, fallback or [])
        if providers:
            try:
                with trio.move_on_after(left):
                    path = await node.host.fetch(
                        sha256,
                        providers,
                        node.artifacts.incoming,
                        max_bytes,
                        timeout=min(PER_PROVIDER_TIMEOUT_S, left),
                    )
                    break
                last = "timed out"
            except FileTooLarge as exc:  # final: a sha256 names one file; it will not shrink
                raise ArtifactError(f"{kind} {sha256[:12]} of round {round} is too large: {exc}") from None
            except P2PError as exc:
                last = str(exc)
        from_ipfs = await ipfs_fetch(node, cid, sha256, max_bytes)
        if from_ipfs is not None:
            path = from_ipfs
            break
        # a refusal is mostly a provider that has not yet seen the commit phase close (it looks
        # within its watch interval): ask again soon, then less and less often
        await trio.sleep(min(pause, max(0.0, deadline - node.now())))
        pause = min(RETRY_MAX_S, pause * 2)
    weights = await trio.to_thread.run_sync(node.artifacts.import_file, sha256, path, kind, round)
    try:
        await trio.to_thread.run_sync(validate_adapter, weights, spec, max_bytes)
    except TrainingError as exc:
        if kind == "update":
            # issue 12: the bytes match the commit, so they prove the update invalid; keep and serve
            # them, so that verifiers can check the aggregator's claim (`invalid` in submitAggregate)
            # even if the author refuses them. Every use of an update re-checks it (check_update).
            # (served, not announced, like every fetched update: see below)
            await publish(node, sha256, kind, round, announce=False)
        else:
            weights.unlink(missing_ok=True)
        raise ArtifactError(f"{kind} {sha256[:12]} of round {round} is not a valid adapter: {exc}") from None
    # served on, but a fetched update is not announced: every committer fetches every update, so
    # re-announcing them is n*(n-1) gossip messages a round, each delivered to every member (CPU
    # that grows as n^3 in all); fetchers fall back to the other committers instead (collect_updates)
    await publish(node, sha256, kind, round, announce=kind != "update")
    size = weights.stat().st_size
    if (mon := getattr(node, "monitor", None)) is not None:
        mon.transferred("in", size)
    log.info("holding %s %s of round %d (%d bytes)", kind, sha256[:12], round, size)
    return str(weights)
