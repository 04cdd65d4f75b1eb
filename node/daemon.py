"""`medfed-node start`: check everything that can be checked, then run the round machine forever.

Start-up refuses with one clear error for: an unreachable RPC, a wrong chain id, no contract at
the address (chain/ raises those), a wallet that is not a member, a LoRA config or base model
that differs from the federation's on-chain record, missing or malformed data, a model that
cannot be loaded, and a state dir that belongs to another federation or wallet.

Then a trio loop runs: the p2p host (wallet key, members' published multiaddrs as bootstrap),
the gossip reader, the chain keepalive (node.keepalive: on Cypherium, a transaction when the
chain has been silent for `[chain] keepalive_s`), and `round.tick` every poll interval (at once
again when the round moved on).
Chain calls and training run in worker threads. A failing tick is logged and retried; the node
does not die on a hiccup.

When the members hand the federation over to a successor coordinator (issue 21), the node follows
it (`follow_successor`: a medfed Coordinator with this wallet as a member, the same base model and
LoRA config), with a state store of its own under `state_dir/coordinators/<address>`: in the same
process when the `Successor` event comes, and at start-up along the chain's `successor()` record
(the configured coordinator may stay the first one). When it cannot, it stops with one line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from chain.client import CoordinatorClient
from chain.errors import ChainError, ContractRevert
from chain.wallet import Wallet
from node import round as rounds
from node.artifacts import ArtifactStore
from node.behaviour import Behaviour, HonestBehaviour
from node.censorship import handed
from node.chainkind import resolve_profile
from node.config import NodeConfig, P2PSection
from node.context import Node
from node.data import load_site_data
from node.errors import HandedOver, NodeError, Retired, StartupError
from node.keepalive import keep_chain_live, keepalive_interval
from node.learning import Learner, federation_hash, lora_settings
from node.outage import rpc_unreachable
from node.privacy import PrivacyLedger, plan_privacy
from node.state import StateStore
from p2p.identity import peer_id_from_private_key
from p2p.limits import FloodLimits
from p2p.relay import RelaySettings

if TYPE_CHECKING:
    from node.monitoring import MonitoringServer

log = logging.getLogger("medfed.node")
INITIAL_SEED = 0  # the seed `medfed-localnet` and deployers use for the initial adapter's A matrices
BALANCE_EVERY_S = 15.0  # how often the monitoring balances are read from the chain


def connect_chain(cfg: NodeConfig, wallet: Wallet | None) -> CoordinatorClient:
    """A client for the configured coordinator (RpcUnreachable / WrongChain / NoContract on failure).

    The profile's time unit comes from the chain itself (node.chainkind), never from the config alone.
    """
    profile = resolve_profile(cfg.chain.rpc_url, cfg.chain.profile)
    if cfg.chain.gas_price_gwei:
        profile = profile.replace(gas_price_wei=int(cfg.chain.gas_price_gwei * 10**9))
    return CoordinatorClient(cfg.chain.rpc_url, cfg.chain.coordinator, wallet, profile)


def moved_message(cfg: NodeConfig, successor: str) -> str:
    """The one line that tells the operator where the federation went (issue 21)."""
    return (
        f"the members handed this federation over to coordinator {successor}: start the node again "
        f"(with the same {cfg.path.name}) and it follows the successor"
    )


MAX_HOPS = 32  # successors of successors followed at start-up, at most (a cycle is refused earlier)


def store_dir(cfg: NodeConfig, coordinator: str, first: str) -> Path:
    """Where the state of `coordinator` lives: the state dir itself for the configured coordinator
    (`first`), `state_dir/coordinators/<address>` for each successor followed (a StateStore is
    bound to one coordinator)."""
    if coordinator.lower() == first.lower():
        return cfg.state_dir
    return cfg.state_dir / "coordinators" / coordinator.lower()


def deploy_block(client: CoordinatorClient) -> int:
    """The block the coordinator was deployed in (its Deployed event): the first block with its
    code; 0 (read from genesis) where the chain keeps no history."""
    block = client.first_code_block()
    if block is None:  # a pruned node: scan from genesis (slow, but right)
        log.info("reading the successor's events from block 0")
        return 0
    return block


def follow_successor(
    cfg: NodeConfig, wallet: Wallet, old: CoordinatorClient, successor: str, proposal: int, first: str
) -> NodeConfig:
    """The config for `successor`, once it is safe to follow (issue 21): a medfed Coordinator
    (CoordinatorClient checks its code and identity views) that counts this wallet as a member
    (joining where membership is open) and trains this node's base model with its LoRA config.
    Anything else raises Retired with the one line that says why and what the operator does."""
    moved = f"the members handed the federation over to coordinator {successor}" + (
        f" (proposal {proposal})" if proposal else ""
    )
    if successor.lower() in {old.address.lower(), first.lower()}:
        raise Retired(f"{moved}, which names an earlier coordinator again: the node stops; tell the members")
    try:
        client = CoordinatorClient(cfg.chain.rpc_url, successor, wallet, old.profile)
    except ChainError as exc:
        raise Retired(
            f"{moved}, but it is not a medfed Coordinator this node can follow ({exc}): the node stops; "
            "ask the members which coordinator to use and set [chain] coordinator accordingly"
        ) from None
    chain = dataclasses.replace(cfg.chain, coordinator=client.address, start_block=deploy_block(client))
    new = dataclasses.replace(cfg, chain=chain)
    try:
        check_federation(new, client)
    except StartupError as exc:
        raise Retired(f"{moved}, which this node cannot follow: {exc}; then start it again") from None
    if not client.is_member(wallet.address):
        if not client.params().open_membership:
            raise Retired(
                f"{moved}, but {wallet.address} is not one of its members: the node stops; ask its members "
                f"to admit this address (`medfed-node propose add-member {wallet.address}` on the successor, "
                "the others vote), then start the node again"
            )
        log.info("the successor's membership is open: joining it as %s", wallet.address)
        client.join()
    where = store_dir(new, client.address, first)
    log.info("%s: following it; state in %s", moved, where)
    return new


def follow_successors(cfg: NodeConfig, wallet: Wallet) -> NodeConfig:
    """Start-up: from the configured coordinator along the chain's record of hand-overs to the one
    in charge (the configured one when there was none), each checked by `follow_successor`."""
    client = connect_chain(cfg, wallet)
    first = client.address
    for _ in range(MAX_HOPS):
        successor = client.successor()
        if successor is None:
            return cfg
        cfg = follow_successor(cfg, wallet, client, successor, 0, first)
        client = connect_chain(cfg, wallet)
    raise Retired(
        f"more than {MAX_HOPS} hand-overs from coordinator {first}: set [chain] coordinator to a later one"
    )


def check_membership(cfg: NodeConfig, client: CoordinatorClient, wallet: Wallet, wait: bool = False) -> bool:
    """Refuse to run unless the wallet is a member (joins by itself where membership is open) of a
    coordinator still in charge. `wait`: a wallet not admitted yet is no error (False returned):
    the node prepares everything and waits for the members' vote (see `await_admission`)."""
    successor = client.successor()
    if successor is not None:
        raise StartupError(moved_message(cfg, successor))
    if client.is_member(wallet.address):
        return True
    if client.params().open_membership:
        log.info("membership is open: joining the federation as %s", wallet.address)
        client.join()
        return True
    if wait:
        log.info(
            "%s is not a member yet: waiting for the members' vote (one of them runs `medfed-node "
            "propose add-member %s`, the others `medfed-node vote-proposal ID yes`)",
            wallet.address,
            wallet.address,
        )
        return False
    raise StartupError(
        f"{wallet.address} is not a member of coordinator {client.address}: send this address to the "
        "federation's members (one proposes `medfed-node propose add-member ADDRESS`, the members vote), "
        "then start again"
    )


def check_federation(cfg: NodeConfig, client: CoordinatorClient) -> None:
    """Refuse to run with a LoRA config or base model other than the one recorded on-chain."""
    from training.models import base_model_id

    ours = federation_hash(cfg)
    theirs = client.lora_config_hash().hex()
    if ours != theirs:
        raise StartupError(
            f"{cfg.path.name}: [lora], [aggregation] and [privacy] require_* settings (rank, alpha, "
            f"dropout, targets, strategy, bounds, fallback_after, privacy policy) hash to {ours[:12]}, "
            f"the federation records {theirs[:12]}: copy the [lora], [aggregation] and [privacy] "
            "require_* settings the federation published (a federation deployed before "
            "min_update_ratio existed needs min_update_ratio = 0)"
        )
    want = client.base_model()
    have = base_model_id(cfg.model.base)
    if want != have:
        raise StartupError(
            f"{cfg.path.name}: [model] base = {cfg.model.base!r} is {have!r}, the federation trains "
            f"{want!r}: set base to that model"
        )


def initial_sha256(node: Node) -> str:
    """sha256 of the federation's initial adapter (from the Deployed event; remembered in the store)."""
    from chain import types as ev
    from chain.events import EventReader

    have = node.store.get_meta("initial_sha256")
    if have:
        return have
    g = node.client.global_adapter()
    sha = bytes(g.sha256).hex() if g.round == 0 else ""
    if not sha:
        start = node.cfg.chain.start_block
        end = start if start > 0 else node.client.block_number()  # start_block 0: scan (set it!)
        deployed = [e for e in EventReader(node.client).read(start, end) if isinstance(e, ev.Deployed)]
        if not deployed:
            raise StartupError(
                f"{node.cfg.path.name}: [chain] start_block = {start}: no Deployed event there; "
                "set it to the Coordinator's deployment block"
            )
        sha = bytes(deployed[0].initial_sha256).hex()
    node.store.set_meta("initial_sha256", sha)
    return sha


def _install_initial_adapter(node: Node) -> None:
    """Hold the federation's initial adapter: from [model] initial_adapter, else rebuilt from its seed.

    If neither matches the on-chain sha256 it is fetched from peers when round 1 needs it.
    """
    from training.lora import initial_adapter_state

    sha = initial_sha256(node)
    if node.artifacts.has(sha):
        return
    if node.cfg.model.initial_adapter:
        path = node.cfg.resolve(node.cfg.model.initial_adapter)
        if path.is_dir():
            path = path / "adapter_model.safetensors"
        if not path.is_file():
            raise StartupError(f"{node.cfg.path.name}: [model] initial_adapter: {path} does not exist")
        tmp = node.artifacts.scratch / "initial.safetensors"
        tmp.write_bytes(path.read_bytes())
        try:
            node.artifacts.import_file(sha, tmp, "global", 0)
        except NodeError as exc:
            raise StartupError(
                f"{node.cfg.path.name}: [model] initial_adapter is not this federation's ({exc})"
            ) from None
        return
    state = initial_adapter_state(node.learner.model, node.settings, INITIAL_SEED)
    got = node.artifacts.put_state(state, "global", 0)
    if got != sha:
        log.info("initial adapter rebuilt from seed %d does not match the chain; will fetch it", INITIAL_SEED)


async def await_admission(node: Node) -> None:
    """Started with --wait-for-admission: poll until the members' vote admits this wallet (issue
    21); the round machine then starts with the next round."""
    while not await node.chain(node.client.is_member, node.address):
        successor = await node.chain(node.client.successor)
        if successor is not None:
            raise HandedOver(moved_message(node.cfg, successor), successor)
        await trio.sleep(node.cfg.rounds.poll_interval_s)
    node.admitted = True
    node.members = frozenset(a.lower() for a in await node.chain(node.client.members))
    log.info("admitted by the members' vote: %s is a member, joining the federation", node.address)


def prepare(
    cfg: NodeConfig,
    wallet: Wallet,
    behaviour: Behaviour | None = None,
    wait_for_admission: bool = False,
    state_at: Path | None = None,
) -> Node:
    """Every start-up check and load, before the event loop; raises one-line errors. `state_at`:
    the coordinator's state store and adapters (default: the state dir; see `store_dir`)."""
    from training.adapter_io import AdapterSpec

    client = connect_chain(cfg, wallet)
    admitted = check_membership(cfg, client, wallet, wait_for_admission)
    check_federation(cfg, client)
    data = load_site_data(cfg)
    plan = plan_privacy(cfg, len(data.train))  # a refusal before any log line: one line in all
    log.info("data %s: %d training and %d held-out questions", data.name, len(data.train), len(data.eval))
    where = state_at or cfg.state_dir
    store = StateStore(where, client.address, wallet.address)
    ledger = PrivacyLedger(store, plan) if plan is not None else None
    if plan is not None and ledger is not None:
        log.info("privacy: %s; spent so far epsilon %.3f", plan.describe(), ledger.spent())
    settings = lora_settings(cfg)
    artifacts = ArtifactStore(where, store, settings, "")
    learner = Learner(cfg, settings, artifacts.scratch)
    artifacts.base_model = learner.base_model
    spec = AdapterSpec.from_model(learner.model, settings)
    node = Node(
        cfg=cfg,
        address=wallet.address,
        peer_id=peer_id_from_private_key(wallet.private_key),
        client=client,
        store=store,
        artifacts=artifacts,
        data=data,
        learner=learner,
        settings=settings,
        spec=spec,
        behaviour=behaviour or HonestBehaviour(),
        members=frozenset(a.lower() for a in client.members()),
        admitted=admitted,
        privacy=ledger,
    )
    _install_initial_adapter(node)
    return node


def _may_serve(node: Node) -> Callable[[str, str], bool]:
    """The access policy: members only; a round's updates only once its commit phase is over (the
    chain closed it: every member committed, or the deadline passed), so nobody can copy an update
    before committing their own."""

    def may_serve(address: str, sha256: str) -> bool:
        if address.lower() not in node.members:
            return False
        kind, rnd = node.served.get(sha256.lower(), ("", 0))
        if (
            kind == "update"
            and rnd not in node.commits_closed  # seen on-chain: no commit can be added any more
            and node.now() < node.commit_deadlines.get(rnd, math.inf)
        ):
            return False  # nobody may copy an update before committing their own
        if not node.behaviour.serves_to(node, address.lower(), sha256.lower(), kind, rnd):
            return False
        if kind == "update":  # who fetched which update when: censorship evidence (issue 24)
            handed(node, rnd, address.lower(), sha256.lower())
        monitor = getattr(node, "monitor", None)
        if monitor is not None:  # bytes offered to a peer (the transfer follows)
            path = node.artifacts.weights(sha256.lower())
            monitor.transferred("out", path.stat().st_size if path is not None else 0)
        return True

    return may_serve


def published_addrs(cfg: NodeConfig, listening: list[str], peer_id: str) -> list[str]:
    """Multiaddrs to publish on-chain, each ending in /p2p/<peer id>."""
    # a private site's own addresses are unreachable: only the relayed ones count
    base = listening if cfg.p2p.reachability == "private" else (list(cfg.p2p.announce) or listening)
    return [a if a.endswith(f"/p2p/{peer_id}") else f"{a.rstrip('/')}/p2p/{peer_id}" for a in base]


async def serve(node: Node) -> None:
    """The node's event loop: p2p host, gossip reader, round machine."""
    from p2p.host import open_host

    for sha, _path, kind, rnd in node.store.artifacts():
        node.served[sha] = (kind, rnd)
    topic = f"/medfed/{node.client.profile.chain_id}/{node.client.address.lower()}/1"
    async with open_host(
        node_key(node),
        node.cfg.p2p.listen,
        topic,
        is_member=lambda a: a.lower() in node.members,
        may_serve=_may_serve(node),
        store_dir=node.cfg.state_dir / "p2p",
        max_file_bytes=node.cfg.model.max_adapter_mb << 20,
        bootstrap=node.cfg.p2p.bootstrap,
        limits=flood_limits(node.cfg.p2p),
        relay=relay_settings(node.cfg.p2p),
    ) as host:
        node.host = host
        for sha, path, _kind, _rnd in node.store.artifacts():
            if path.is_file():
                host.serve(sha, path)
        if not node.admitted:  # evaluate the baseline meanwhile: ready to train once admitted
            await rounds.evaluate_initial(node)
            node.set_status(activity="waiting for the members' vote", address=node.address)
            await await_admission(node)
        private = node.cfg.p2p.reachability == "private"
        if not private:  # a private site publishes once a relay holds a reservation for it
            await _publish_peer(node)
        await _dial_members(node)
        async with trio.open_nursery() as nursery:
            if private:
                nursery.start_soon(_publish_relayed, node)
            nursery.start_soon(_drain_gossip, node)
            nursery.start_soon(_watch_chain, node)
            nursery.start_soon(
                keep_chain_live, node, keepalive_interval(node.cfg.chain.keepalive_s, node.client.profile)
            )
            await rounds.evaluate_initial(node)
            node.set_status(ready=True, address=node.address, peer_id=node.peer_id, activity="idle")
            log.info("node %s ready (peer %s, %d members)", node.address, node.peer_id, len(node.members))
            next_balance = 0.0
            while True:
                woken = node.wake_event()  # taken first: an event mined during the tick counts
                moved = await _safe_tick(node)
                if node.monitor is not None and node.now() >= next_balance:
                    next_balance = node.now() + BALANCE_EVERY_S
                    await _refresh_balances(node)
                if not moved:  # else the round moved on: look again at once
                    # the next poll, or at once when the chain watcher sees a coordinator event
                    with trio.move_on_after(node.cfg.rounds.poll_interval_s):
                        await woken.wait()


def flood_limits(p2p: P2PSection) -> FloodLimits:
    """The [p2p] flood limits as the p2p layer takes them."""
    return FloodLimits(
        gossip_rate=p2p.gossip_rate,
        gossip_burst=p2p.gossip_burst,
        max_streams_per_peer=p2p.max_streams_per_peer,
        max_streams=p2p.max_streams,
    )


def relay_settings(p2p: P2PSection) -> RelaySettings:
    """The [p2p] relay keys as the p2p layer takes them."""
    return RelaySettings(
        serve=p2p.relay,
        private=p2p.reachability == "private",
        relays=p2p.relays,
        max_reservations=p2p.relay_max_reservations,
        circuit_mb=p2p.relay_circuit_mb,
        hole_punch=p2p.hole_punch,
    )


async def _publish_relayed(node: Node) -> None:
    """A private site: publish its relayed addresses whenever the relays holding a reservation for
    it change (the members then dial it through them)."""
    assert node.host is not None and node.host.relay is not None
    relay = node.host.relay
    published: list[str] | None = None
    waited = 0.0
    while True:
        changed = relay.changed
        addrs = node.host.advertised_multiaddrs()
        if addrs and addrs != published:
            try:
                await _publish_peer(node)
                published = addrs
            except Exception as exc:  # the next change (or the next minute) tries again
                log.warning("could not publish the relayed addresses: %r", exc)
        elif not addrs and waited >= 60:
            log.warning(
                "no relay holds a reservation for this site yet (reachability = private): other "
                "members cannot reach it; set [p2p] relays or have a reachable member set relay = true"
            )
            waited = 0.0
        with trio.move_on_after(30):
            await changed.wait()
        waited += 30


def node_key(node: Node) -> bytes:
    """The wallet key (the p2p identity is the institution's key)."""
    return bytes(node.client.wallet.private_key) if node.client.wallet else b""


async def _publish_peer(node: Node) -> None:
    assert node.host is not None
    addrs = published_addrs(node.cfg, node.host.advertised_multiaddrs(), node.peer_id)
    name = node.cfg.node.name
    rec = await node.chain(node.client.member_peer, node.address)
    if (
        rec is not None
        and rec.peer_id == node.peer_id
        and list(rec.multiaddrs) == addrs
        and rec.display_name == name
    ):
        return
    await node.chain(node.client.publish_peer, node.peer_id, addrs, name)
    log.info("published peer %s at %s%s", node.peer_id, ", ".join(addrs), f" as {name!r}" if name else "")


async def _dial_members(node: Node) -> None:
    assert node.host is not None
    for member in sorted(node.members):
        if member == node.me:
            continue
        rec = await node.chain(node.client.member_peer, member)
        if rec is None or not rec.multiaddrs:
            continue
        node.store.set_peer(member, rec.peer_id, rec.multiaddrs)
        try:
            await node.host.connect(list(rec.multiaddrs), keep=True)
        except Exception as exc:
            log.info("member %s not reachable yet: %s", member, exc)


async def _watch_chain(node: Node) -> None:
    """Wake the round machine as soon as a block with a coordinator event is mined (a commit, the
    election, a submission, a vote, an outcome, a report), instead of a poll later. One cheap call
    (the latest block number) every ``[rounds] watch_interval_s``, and one log query per new block
    range; empty blocks (anvil's timer, other contracts) wake nothing. Deadlines and staggers are
    still followed by the poll."""
    from chain.events import EventReader

    every = node.cfg.rounds.watch_interval_s
    if every <= 0:
        return
    reader = EventReader(node.client)
    seen = -1
    while True:
        await trio.sleep(every)
        try:
            latest = await node.chain(node.client.block_number)
            if seen < 0:
                seen = latest
            elif latest > seen:
                if await node.chain(reader.any_in, seen + 1, latest):
                    node.wake()
                seen = latest
        except Exception as exc:  # a hiccup: the poll still runs; try again
            log.debug("chain watch: %r", exc)


async def _drain_gossip(node: Node) -> None:
    assert node.host is not None
    async for ann, address in node.host.announcements():
        # the whole announcement as it came over the wire (typed fields only: kind, round, sha256,
        # size, peer id, time): operators and tests can see everything members say to each other
        log.info("gossip: from %s %s", address, ann.encode().decode())
        if ann.kind == "update" and address.lower() != node.me:
            await node.behaviour.saw_update(node, ann.round, address.lower(), ann.sha256, "gossip")


async def _refresh_balances(node: Node) -> None:
    try:
        token = await node.chain(node.client.token_balance, node.address)
        native = await node.chain(node.client.eth_balance, node.address)
        node.monitor.balances(token, native)
    except Exception as exc:  # a metric must not stop the node
        log.debug("balance refresh failed: %r", exc)


async def _safe_tick(node: Node) -> bool:
    try:
        moved = await rounds.tick(node)
        node.chain_outage.ok()
        if node.monitor is not None:
            node.monitor.ticked()
        return moved
    except HandedOver:
        raise  # run_daemon follows the successor, or stops saying why
    except Retired as exc:
        log.error("%s", exc)
        raise
    except ContractRevert as exc:
        log.warning("the contract refused %s: %s", exc.function, exc.reason)
    except Exception as exc:
        if rpc_unreachable(exc):  # one line when it goes down, one a minute, one when it is back
            node.chain_outage.failed(exc)
        elif isinstance(exc, ChainError | NodeError):
            log.warning("%s (retrying)", exc)
        else:
            log.exception("unexpected error in the round machine (retrying)")
    if node.monitor is not None:
        node.monitor.tick_errors.inc()
    return False


def start_monitor(node: Node) -> MonitoringServer | None:
    """Serve /metrics and /healthz when [monitoring] enabled = true (StartupError if the port is taken)."""
    mc = node.cfg.monitoring
    if not mc.enabled:
        return None
    from node.monitoring import Monitor, start_monitoring

    monitor = Monitor(stale_after_s=max(120.0, 20 * node.cfg.rounds.poll_interval_s))
    monitor.info.info(
        {"address": node.address, "coordinator": node.client.address, "data_kind": node.data.kind}
    )
    try:
        server = start_monitoring(mc.listen, monitor)
    except OSError as exc:
        raise StartupError(
            f"{node.cfg.path.name}: [monitoring] listen = {mc.listen!r} cannot be bound ({exc.strerror}); "
            "choose a free port"
        ) from None
    node.monitor = monitor
    node.learner.observer = monitor.trained
    log.info("monitoring on http://%s:%d/metrics and /healthz", server.httpd.server_address[0], server.port)
    return server


def run_daemon(
    cfg: NodeConfig, wallet: Wallet, behaviour: Behaviour | None = None, wait_for_admission: bool = False
) -> None:
    """Start-up checks, then the event loop until interrupted (honest unless a test harness
    passes another ``behaviour``). When the members hand the federation over to a successor
    coordinator (issue 21), the node follows it in this process: the round machine runs again
    against the successor, with its own state store (`store_dir`)."""
    first = cfg.chain.coordinator
    cfg = follow_successors(cfg, wallet)
    node = prepare(cfg, wallet, behaviour, wait_for_admission, store_dir(cfg, cfg.chain.coordinator, first))
    server = start_monitor(node)
    try:
        while True:
            try:
                trio.run(serve, node)
                return
            except BaseExceptionGroup as group:
                leaf = _first_leaf(group)
                if not isinstance(leaf, HandedOver):
                    raise leaf from None
                handed: HandedOver = leaf
            except HandedOver as exc:
                handed = exc
            node = _follow(node, wallet, handed, first)
    finally:
        if server is not None:
            server.stop()
        node.store.close()


def _follow(node: Node, wallet: Wallet, handed: HandedOver, first: str) -> Node:
    """Leave the retired coordinator for its successor: a Node for it (Retired when it cannot)."""
    node.store.set_meta("successor", handed.coordinator.lower())  # the record: `medfed-node status`
    node.store.close()
    cfg = follow_successor(node.cfg, wallet, node.client, handed.coordinator, handed.proposal, first)
    nxt = prepare(cfg, wallet, node.behaviour, False, store_dir(cfg, cfg.chain.coordinator, first))
    if node.monitor is not None:  # the same /metrics endpoint goes on
        nxt.monitor = node.monitor
        nxt.learner.observer = node.monitor.trained
        node.monitor.info.info(
            {"address": nxt.address, "coordinator": nxt.client.address, "data_kind": nxt.data.kind}
        )
    return nxt


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
