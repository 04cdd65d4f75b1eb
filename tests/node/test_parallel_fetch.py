"""The aggregator and the verifiers fetch a round's updates concurrently, at most `parallel` at a
time: real libp2p hosts on loopback, real adapter files checked against their sha256. A wrapper
around the real `host.fetch` counts the transfers in flight (and holds each one a little, so that
overlapping transfers are visible on a fast loopback)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import trio
from eth_account import Account

from node.artifacts import ArtifactStore
from node.behaviour import HonestBehaviour
from node.config import TEMPLATE, load_config
from node.context import RoundMemo
from node.roles.aggregator import MAX_PARALLEL_FETCHES, collect_updates
from node.state import Commit, StateStore
from p2p.host import open_host
from p2p.identity import peer_id_from_private_key
from p2p.limits import FloodLimits
from training.adapter_io import AdapterSpec, update_metadata, write_canonical_adapter
from training.lora import LoraSettings, initial_adapter_state
from training.models import build_tiny_model

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FEDERATION = f"31337:{COORD.lower()}"
SETTINGS = LoraSettings(rank=4, alpha=8)
HOLD_S = 0.3


def _node(dir: Path, key: bytes, model: Any) -> Any:
    dir.mkdir(parents=True)
    p = dir / "medfed.toml"
    p.write_text(TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD))
    cfg = load_config(p)
    address = Account.from_key(key).address
    store = StateStore(cfg.state_dir, COORD, address)
    return SimpleNamespace(
        cfg=cfg,
        store=store,
        artifacts=ArtifactStore(cfg.state_dir, store, SETTINGS, "medfed/tiny-llama"),
        settings=SETTINGS,
        spec=AdapterSpec.from_model(model, SETTINGS),
        peer_id=peer_id_from_private_key(key),
        served={},
        federation_id=FEDERATION,
        address=address,
        me=address.lower(),
        members=frozenset(),
        host=None,
        now=time.time,
        behaviour=HonestBehaviour(),
        memo=RoundMemo(1),
    )


@pytest.mark.parametrize("parallel", [3, 1])
def test_updates_are_fetched_concurrently_within_the_bound(tmp_path: Path, parallel: int) -> None:
    model, _tok = build_tiny_model()
    n = 7
    provider_key, fetcher_key = bytes(Account.create().key), bytes(Account.create().key)
    members = [Account.create().address.lower() for _ in range(n)]
    files = []
    for i, m in enumerate(members):  # each update names its committer, round and federation (B6)
        state = initial_adapter_state(model, SETTINGS, 11)
        state = {k: (v + np.float32(0.01 * (i + 1)) if "lora_B" in k else v) for k, v in state.items()}
        meta = update_metadata(m, 1, FEDERATION)
        sha = write_canonical_adapter(state, SETTINGS, "medfed/tiny-llama", tmp_path / f"u{i}", meta)
        files.append((sha, tmp_path / f"u{i}" / "adapter_model.safetensors"))
    node = _node(tmp_path / "fetcher", fetcher_key, model)
    # the round's reference for the bounds: the initial adapter the updates started from
    initial = node.artifacts.put_state(initial_adapter_state(model, SETTINGS, 11), "global", 0)
    node.store.set_meta("initial_sha256", initial)
    commits = [Commit(1, m, sha, "", 10) for m, (sha, _) in zip(members, files, strict=True)]
    in_flight, peak = 0, 0

    async def main() -> list[Any]:
        nonlocal in_flight, peak
        async with (
            open_host(
                provider_key,
                ["/ip4/127.0.0.1/tcp/0"],
                "/t",
                lambda a: True,
                lambda a, s: True,
                tmp_path / "p1",
                # the fetcher's bound is under test, not the provider's flood limit (1 per peer)
                limits=FloodLimits(max_streams_per_peer=n),
            ) as provider,
            open_host(
                fetcher_key,
                ["/ip4/127.0.0.1/tcp/0"],
                "/t",
                lambda a: True,
                lambda a, s: True,
                tmp_path / "p2",
            ) as fetcher,
        ):
            for sha, path in files:
                provider.serve(sha, path)
            pid = peer_id_from_private_key(provider_key)
            addrs = tuple(a if a.endswith(pid) else f"{a}/p2p/{pid}" for a in provider.listen_multiaddrs())
            for m in members:  # every member's update is offered by this one provider
                node.store.set_peer(m, pid, addrs)
            real_fetch = fetcher.fetch

            async def counting_fetch(*args: Any, **kwargs: Any) -> Path:
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    await trio.sleep(HOLD_S)
                    return await real_fetch(*args, **kwargs)
                finally:
                    in_flight -= 1

            fetcher.fetch = counting_fetch  # type: ignore[method-assign]
            node.host = fetcher
            t0 = time.monotonic()
            out = await collect_updates(node, 1, commits, time.time() + 60, parallel=parallel)
            took.append(time.monotonic() - t0)
            return out

    took: list[float] = []
    got = trio.run(main)
    assert [c.problem for c in got] == [""] * n
    for c, (sha, src) in zip(got, files, strict=True):
        assert c.commit.sha256 == sha and Path(c.path).read_bytes() == src.read_bytes()
    assert peak == parallel  # concurrent, and never more than the bound
    if parallel > 1:
        assert took[0] < n * HOLD_S  # overlapped: one at a time takes at least n * HOLD_S
    assert 1 < MAX_PARALLEL_FETCHES <= 16
    node.store.close()
