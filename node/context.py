"""Everything a running node holds, passed to the round machine and the roles."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from chain.client import CoordinatorClient
from chain.types import ChainParams
from node.artifacts import ArtifactStore
from node.behaviour import Behaviour, HonestBehaviour
from node.config import NodeConfig
from node.data import SiteData
from node.outage import OutageLog
from node.state import StateStore
from p2p.host import MedfedHost
from training.adapter_io import AdapterSpec
from training.lora import LoraSettings

T = TypeVar("T")
log = logging.getLogger("medfed.node")


@dataclass
class RoundMemo:
    """What the node remembers for the live round only (`Node.enter_round` clears it); keys still
    name their round, so a call about another round never reads this one's."""

    round: int
    first_due: dict[tuple[object, ...], float] = field(default_factory=dict)  # housekeeping key -> first seen
    training_failed: set[int] = field(default_factory=set)  # said once: no update this round
    fallback_said: set[int] = field(default_factory=set)  # said once: training from an older global
    refused_own: set[tuple[int, str]] = field(default_factory=set)  # (round, sha256) of our invalid update
    pinned: set[str] = field(default_factory=set)  # sha256 of our update pinned on IPFS
    prefetched: set[int] = field(default_factory=set)  # rounds whose updates we fetched ahead
    serve_refused: set[int] = field(default_factory=set)  # said once: serveRound refused (issue 20)
    # (federation, round, member, sha256, reference sha256) -> "" (valid) or why the update is invalid
    checked: dict[tuple[str, int, str, str, str], str] = field(default_factory=dict)
    # issue 24 (node/censorship.py): (round, member, sha256) -> when we first held it, valid;
    # (round, requester, sha256) -> when we first let a member fetch our update
    held_at: dict[tuple[int, str, str], float] = field(default_factory=dict)
    handed_at: dict[tuple[int, str, str], float] = field(default_factory=dict)
    params: ChainParams | None = None  # the coordinator's parameters, read once a round


@dataclass
class Node:
    """A running site: config, identity, chain client, local state, data, model and p2p host."""

    cfg: NodeConfig
    address: str  # checksummed wallet address
    peer_id: str
    client: CoordinatorClient
    store: StateStore
    artifacts: ArtifactStore
    data: SiteData
    learner: Any  # node.learning.Learner (kept loose so round logic can be exercised without torch)
    settings: LoraSettings
    spec: AdapterSpec  # what a valid update looks like (from the federation's initial adapter)
    behaviour: Behaviour = field(default_factory=HonestBehaviour)
    host: MedfedHost | None = None
    members: frozenset[str] = frozenset()  # lower-case addresses
    admitted: bool = True  # False: started with --wait-for-admission before the members' vote
    commit_deadlines: dict[int, float] = field(default_factory=dict)  # round -> unix seconds
    commits_closed: set[int] = field(default_factory=set)  # rounds whose commit phase is over (early)
    reported: dict[int, set[str]] = field(default_factory=dict)  # round -> members with metrics on-chain
    status: dict[str, Any] = field(default_factory=dict)
    served: dict[str, tuple[str, int]] = field(default_factory=dict)  # sha256 -> (kind, round) we offer
    elected: dict[int, str] = field(default_factory=dict)  # round -> latest elected aggregator (lower)
    monitor: Any = None  # node.monitoring.Monitor when [monitoring] enabled = true
    privacy: Any = None  # node.privacy.PrivacyLedger when [privacy] mode = "dp-sgd"
    chain_outage: OutageLog = field(default_factory=lambda: OutageLog(log, "chain RPC"))
    memo: RoundMemo = field(default_factory=lambda: RoundMemo(0))
    _chain_lock: trio.Lock = field(default_factory=trio.Lock)
    _woken: trio.Event = field(default_factory=trio.Event)

    def enter_round(self, round: int) -> None:
        """The live round is ``round``: forget what was remembered for another one."""
        if self.memo.round != round:
            self.memo = RoundMemo(round)

    @property
    def me(self) -> str:
        """Lower-case wallet address (the key used in the state store)."""
        return self.address.lower()

    async def chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking chain call in a worker thread, one at a time (one nonce sequence)."""
        async with self._chain_lock:
            try:
                return await trio.to_thread.run_sync(fn, *args)
            except Exception as exc:
                if self.monitor is not None:
                    from chain.errors import ContractRevert

                    self.monitor.chain_failed(isinstance(exc, ContractRevert))
                raise

    def wake_event(self) -> trio.Event:
        """The event the next `wake()` sets (take it before looking at the chain, wait on it after)."""
        return self._woken

    def wake(self) -> None:
        """Something the round machine reacts to happened (a coordinator event was mined): look now."""
        self._woken.set()
        self._woken = trio.Event()

    @property
    def federation_id(self) -> str:
        """``<chain id>:<coordinator>``: written into every update (issue 12, B6 binding)."""
        return f"{self.client.profile.chain_id}:{self.client.address.lower()}"

    def to_unix(self, chain_time: int) -> float:
        """A chain timestamp (seconds or milliseconds) as unix seconds."""
        return self.client.chain_to_seconds(chain_time)

    @staticmethod
    def now() -> float:
        """Wall clock, unix seconds: rounds are scheduled by it; the contract checks deadlines."""
        return time.time()

    def rank(self) -> int:
        """Position of this node among the members (ascending address): staggers housekeeping txs."""
        ordered = sorted(self.members)
        return ordered.index(self.me) if self.me in ordered else len(ordered)

    def set_status(self, **kv: Any) -> None:
        """Update status.json in the state dir (read by `medfed-localnet` and operators)."""
        self.status.update(kv, updated=time.time())
        if self.monitor is not None:
            self.monitor.status(kv)
        path = self.cfg.state_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, sort_keys=True, indent=1))
        os.replace(tmp, path)


def write_metrics_file(state_dir: Path, store: StateStore) -> None:
    """metrics.json: every evaluation this node made ({round: {...}}; round 0 = initial adapter).

    ``accuracy`` is the figure reportMetrics sends (accuracy, or 1/perplexity for chat data);
    ``metric`` says what it is (see node.metric_report), with ``loss``/``nll`` where they apply."""
    from node.metric_report import decode_report

    out = {}
    for m in store.all_metrics():
        what = decode_report(m.eval_set_hash, round(m.accuracy * 1_000_000))
        row: dict[str, Any] = {
            "accuracy": m.accuracy,
            "n": m.n,
            "global_sha256": m.global_sha256,
            "eval_set_hash": m.eval_set_hash,
            "reported": m.reported,
            "metric": what["kind"],
        }
        if what["kind"] == "sft":
            row.update(loss=what["value"], perplexity=what["aux"])
        elif what["kind"] == "mc":
            row.update(nll=what["aux"])
        out[str(m.round)] = row
    tmp = state_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(out, sort_keys=True, indent=1))
    os.replace(tmp, state_dir / "metrics.json")
