"""Scripts a federation directly on a real anvil coordinator (no node processes).

Used by the explorer tests and by `tests/explorer/screenshot.py`. Every transaction goes
through chain.client.CoordinatorClient; the returned `Scenario` records what was sent so
tests can compare the explorer's pages with the chain.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from chain.client import CoordinatorClient
from chain.deploy import deploy_federation
from chain.profile import DEVNET, ChainProfile
from chain.types import AggregatorElected, DeployParams, TxResult
from chain.wallet import Wallet
from localnet.anvil import rpc, set_balance

COMMIT_S = 30
AGGREGATE_S = 30
VERIFY_S = 30
PARAMS = DeployParams(
    commit_duration_s=COMMIT_S,
    aggregate_duration_s=AGGREGATE_S,
    verify_duration_s=VERIFY_S,
    max_attempts=2,
    min_committers=2,
    contributor_reward=10 * 10**18,
    aggregator_reward=5 * 10**18,
    verifier_reward=1 * 10**18,
)


def wallet_from_seed(seed: str) -> Wallet:
    """A deterministic devnet key (never use outside a devnet)."""
    key = hashlib.sha256(b"medfed-explorer-test/" + seed.encode()).digest()
    return Wallet(address=Account.from_key(key).address, private_key=key)


def raw_cid(data: bytes) -> str:
    """CIDv1 (raw codec, sha2-256, base32) of a single-chunk file: what IPFS gives a file under 1 MiB."""
    mh = b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(mh).decode().lower().rstrip("=")


def peer_id_for(w: Wallet) -> str:
    """The libp2p PeerID of a wallet key (p2p.identity), or a stand-in if p2p is unavailable."""
    try:
        from p2p.identity import peer_id_from_private_key

        return peer_id_from_private_key(w.private_key)
    except ImportError:  # pragma: no cover - p2p is part of the repo
        return "16Uiu2" + hashlib.sha256(w.private_key).hexdigest()[:46]


@dataclass
class CommitRec:
    member: str
    sha256: str
    cid: str
    num_samples: int
    tx: str
    block: int
    path: Path


@dataclass
class AttemptRec:
    attempt: int
    aggregator: str
    sha256: str | None = None
    cid: str | None = None
    included: list[str] = field(default_factory=list)
    votes: dict[str, bool] = field(default_factory=dict)
    outcome: str = "pending"
    path: Path | None = None


@dataclass
class RoundRec:
    round: int
    status: str
    commits: list[CommitRec] = field(default_factory=list)
    attempts: list[AttemptRec] = field(default_factory=list)
    rewards: list[tuple[str, int, str]] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)


@dataclass
class Scenario:
    rpc_url: str
    coordinator: str
    token: str
    deploy_block: int
    admin: Wallet
    members: list[Wallet]
    peer_ids: dict[str, str]
    rounds: list[RoundRec]
    outsider_file: Path

    def round(self, n: int) -> RoundRec:
        return self.rounds[n - 1]


def _warp(client: CoordinatorClient, seconds: int) -> None:
    """Move the chain's clock forward (in the chain's own unit: seconds on anvil, ms on Cypherium)."""
    rpc_url = client.rpc_url
    rpc(rpc_url, "evm_increaseTime", [client.seconds_to_chain(seconds)])
    rpc(rpc_url, "evm_mine", [])


def _write(path: Path, seed: str, size: int = 4096) -> bytes:
    data = b""
    i = 0
    while len(data) < size:
        data += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    path.write_bytes(data[:size])
    return data[:size]


def build_federation(
    rpc_url: str,
    workdir: Path,
    n_members: int = 3,
    plan: tuple[str, ...] = ("ok", "fail"),
    profile: ChainProfile = DEVNET,
) -> Scenario:
    """Deploy, admit `n_members`, and play one round per `plan` entry.

    Plan entries: "ok" (accepted at attempt 0), "retry_ok" (rejected, then accepted at attempt 1),
    "fail" (rejected, then the next aggregator times out: the round fails). Every member reports
    metrics after each finalized round.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    admin = wallet_from_seed("admin")
    members = sorted((wallet_from_seed(f"member{i}") for i in range(n_members)), key=lambda w: w.address)
    for w in [admin, *members]:
        set_balance(rpc_url, w.address, 10**21)
    initial = _write(workdir / "initial.safetensors", "initial")
    dep = deploy_federation(
        rpc_url,
        admin,
        PARAMS,
        hashlib.sha256(initial).digest(),
        raw_cid(initial),
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        hashlib.sha256(b"lora r=8 alpha=16").digest(),
        profile,
        members=[w.address for w in members],
    )
    admin_c = CoordinatorClient(rpc_url, dep.coordinator, admin, profile)
    clients = {w.address: admin_c.with_wallet(w) for w in members}
    peer_ids = {}
    for i, w in enumerate(members):
        peer_ids[w.address] = peer_id_for(w)
        clients[w.address].publish_peer(peer_ids[w.address], [f"/ip4/127.0.0.1/tcp/{40100 + i}"])
    rounds: list[RoundRec] = []
    for n, kind in enumerate(plan, start=1):
        rounds.append(_play_round(rpc_url, admin_c, clients, members, n, kind, workdir))
    outsider = workdir / "not-committed.safetensors"
    _write(outsider, "outsider")
    return Scenario(
        rpc_url=rpc_url,
        coordinator=dep.coordinator,
        token=dep.token,
        deploy_block=dep.deploy_block,
        admin=admin,
        members=members,
        peer_ids=peer_ids,
        rounds=rounds,
        outsider_file=outsider,
    )


def _rewards(res: TxResult) -> list[tuple[str, int, str]]:
    return [(e.to, e.amount, e.role) for e in res.events if e.name == "RewardPaid"]  # type: ignore[attr-defined]


def _play_round(
    rpc_url: str,
    admin_c: CoordinatorClient,
    clients: dict[str, CoordinatorClient],
    members: list[Wallet],
    n: int,
    kind: str,
    workdir: Path,
) -> RoundRec:
    rec = RoundRec(round=n, status="open")
    admin_c.open_round()
    for i, w in enumerate(members):
        path = workdir / f"update-r{n}-m{i}.safetensors"
        data = _write(path, f"update/{n}/{i}", 2048 + 512 * i)
        samples = 120 + 40 * i + 7 * n
        res = clients[w.address].commit_update(n, hashlib.sha256(data).digest(), raw_cid(data), samples)
        rec.commits.append(
            CommitRec(
                w.address,
                hashlib.sha256(data).hexdigest(),
                raw_cid(data),
                samples,
                res.tx_hash,
                res.block_number,
                path,
            )
        )
    # every member committed: the last commit closed the phase; the election needs a later block
    # (its seed is the last commit's block hash), so anyone's advance now elects, no clock warp
    elected = admin_c.advance(n).first(AggregatorElected)
    assert isinstance(elected, AggregatorElected)
    committers = [c.member for c in rec.commits]
    attempts_ok = {"ok": [True], "retry_ok": [False, True], "fail": [False, None]}[kind]
    for attempt, good in enumerate(attempts_ok):
        agg = elected.aggregator
        at = AttemptRec(attempt=attempt, aggregator=agg)
        rec.attempts.append(at)
        if good is None:  # the aggregator stays silent: timeout
            _warp(admin_c, AGGREGATE_S + 1)
            res = admin_c.advance(n)
            at.outcome = "aggregator timeout"
            break
        path = workdir / f"aggregate-r{n}-a{attempt}.safetensors"
        data = _write(path, f"aggregate/{n}/{attempt}", 3000)
        at.sha256, at.cid, at.included, at.path = (
            hashlib.sha256(data).hexdigest(),
            raw_cid(data),
            committers,
            path,
        )
        clients[agg].submit_aggregate(n, hashlib.sha256(data).digest(), raw_cid(data), committers)
        for w in members:
            if w.address != agg:
                clients[w.address].vote(n, good)
                at.votes[w.address] = good
        res = admin_c.finalize(n)
        at.outcome = "accepted" if good else "rejected"
        if good:
            rec.rewards = _rewards(res)
            break
        nxt = res.first(AggregatorElected)
        assert isinstance(nxt, AggregatorElected)
        elected = nxt
    rec.status = "finalized" if rec.attempts[-1].outcome == "accepted" else "failed"
    if rec.status == "finalized":
        for i, w in enumerate(members):
            # the weakest site gains most per round: the fairness curves converge
            ppm = (300_000, 480_000, 540_000, 580_000)[i % 4] + (70_000, 40_000, 35_000, 30_000)[i % 4] * n
            clients[w.address].report_metrics(
                n, hashlib.sha256(f"eval/{i}".encode()).digest(), ppm, 250 + 10 * i
            )
            rec.metrics[w.address] = ppm
    return rec
