"""With `[p2p] ipfs_api`, an adapter no peer can serve is fetched by CID, checked, and adopted;
aggregates the node publishes are pinned. Real libp2p host and real adapter files; the Kubo RPC is
a fake (Kubo cannot be installed here)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import trio
from eth_account import Account
from fake_kubo import FakeKubo

from node.artifacts import ArtifactStore
from node.behaviour import HonestBehaviour
from node.config import TEMPLATE, load_config
from node.context import RoundMemo
from node.errors import ArtifactError
from node.state import StateStore
from node.transfer import cid_of, fetch_adapter, publish
from p2p.host import open_host
from p2p.identity import peer_id_from_private_key
from training.adapter_io import AdapterSpec, write_canonical_adapter
from training.lora import LoraSettings, initial_adapter_state
from training.models import build_tiny_model

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FEDERATION = f"31337:{COORD.lower()}"
SETTINGS = LoraSettings(rank=4, alpha=8)


def _node(tmp_path: Path, api: str, key: bytes) -> Any:
    text = TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)
    text = text.replace('ipfs_api = ""', f'ipfs_api = "{api}"')
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    cfg = load_config(p)
    address = Account.from_key(key).address
    store = StateStore(cfg.state_dir, COORD, address)
    model, _tok = build_tiny_model()
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
        _model=model,
    )


def _adapter(node: Any, out: Path) -> tuple[str, Path]:
    state = initial_adapter_state(node._model, SETTINGS, 7)
    state = {k: (v + np.float32(0.01) if "lora_B" in k else v) for k, v in state.items()}
    sha = write_canonical_adapter(state, SETTINGS, "medfed/tiny-llama", out)
    return sha, out / "adapter_model.safetensors"


def test_unservable_adapter_comes_from_ipfs_by_cid(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    with FakeKubo() as kubo:
        node = _node(tmp_path, kubo.url, key)
        sha, src = _adapter(node, tmp_path / "elsewhere")
        cid = cid_of(src)
        kubo.blocks[cid] = src.read_bytes()  # another member pinned it

        async def main() -> None:
            async with open_host(
                key, ["/ip4/127.0.0.1/tcp/0"], "/t", lambda a: False, lambda a, s: False, tmp_path / "p2p"
            ) as host:
                node.host = host
                got = await fetch_adapter(node, sha, "aggregate", 1, [], time.time() + 10, cid=cid)
                assert Path(got).read_bytes() == src.read_bytes()
                assert node.artifacts.weights(sha) == Path(got)
                # a CID whose bytes are not there: no peer, no IPFS -> a clear error at the deadline
                with pytest.raises(ArtifactError, match="could not fetch"):
                    await fetch_adapter(
                        node, "ab" * 32, "aggregate", 1, [], time.time() + 2, cid="bafkreinotthere"
                    )

        trio.run(main)
        node.store.close()


def test_published_aggregates_are_pinned(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    with FakeKubo() as kubo:
        node = _node(tmp_path, kubo.url, key)
        sha, src = _adapter(node, tmp_path / "mine")
        node.artifacts.adopt_dir(sha, src.parent, "aggregate", 1)

        async def main() -> None:
            async with open_host(
                key, ["/ip4/127.0.0.1/tcp/0"], "/t", lambda a: False, lambda a, s: False, tmp_path / "p2p"
            ) as host:
                node.host = host
                await publish(node, sha, "aggregate", 1)

        trio.run(main)
        weights = node.artifacts.weights(sha)
        assert weights is not None and kubo.blocks.get(cid_of(weights)) == weights.read_bytes()
        node.store.close()
