"""Fetching an update is bounded by the size a valid adapter of the federation can have, and a
`too_large` answer is final (not retried for the whole fetch patience). Real libp2p hosts on
loopback, real adapter files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_account import Account
from test_ipfs_fallback import _adapter, _node

from node.errors import ArtifactError
from node.transfer import fetch_adapter
from p2p.host import open_host


def test_padded_update_is_refused_at_once_without_downloading_it(tmp_path: Path) -> None:
    key, provider_key = bytes(Account.create().key), bytes(Account.create().key)
    (tmp_path / "me").mkdir()
    node: Any = _node(tmp_path / "me", "", key)
    sha_ok, good = _adapter(node, tmp_path / "good")
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(good.read_bytes() + bytes(8 << 20))  # valid tensors + 8 MiB of trailing bytes
    from training.adapter_io import sha256_file

    sha_bad = sha256_file(padded)
    owner = Account.from_key(provider_key).address

    async def main() -> None:
        async with (
            open_host(
                key, ["/ip4/127.0.0.1/tcp/0"], "/t", lambda a: True, lambda a, s: True, tmp_path / "p1"
            ) as host,
            open_host(
                provider_key,
                ["/ip4/127.0.0.1/tcp/0"],
                "/t",
                lambda a: True,
                lambda a, s: True,
                tmp_path / "p2",
            ) as provider,
        ):
            node.host = host
            provider.serve(sha_bad, padded)
            provider.serve(sha_ok, good)
            node.store.set_peer(owner, provider.peer_id, tuple(provider.listen_multiaddrs()))
            t0 = time.monotonic()
            with pytest.raises(ArtifactError, match=r"too large.*too_large"):
                await fetch_adapter(node, sha_bad, "update", 1, [owner], time.time() + 60)
            assert time.monotonic() - t0 < 15  # final at the first answer, not after 60 s of retries
            assert node.artifacts.weights(sha_bad) is None
            assert list((node.artifacts.incoming).iterdir()) == []
            # an honest update of the same federation still comes through
            got = await fetch_adapter(node, sha_ok, "update", 1, [owner], time.time() + 30)
            assert Path(got).read_bytes() == good.read_bytes()

    trio.run(main)
    node.store.close()
