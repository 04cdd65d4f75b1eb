"""KuboClient against a FAKE Kubo RPC server on loopback (tests/support/fake_kubo.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fake_kubo import PROFILE, FakeKubo

from p2p.cid import cid_of_file
from p2p.errors import IpfsError, NoProviderError
from p2p.ipfs import ADD_PARAMS, KuboClient
from p2p.testdata import pattern_chunks


def write_pattern(path: Path, size: int) -> Path:
    path.write_bytes(b"".join(pattern_chunks(size)))
    return path


def test_add_uses_cid_profile_and_round_trips_through_cat(tmp_path: Path) -> None:
    src = write_pattern(tmp_path / "adapter.safetensors", 3 * (1 << 20) + 5)
    with FakeKubo() as kubo:
        client = KuboClient(kubo.url)
        assert client.version() == "0.0.0-fake"
        cid = client.add(src)
        assert cid == cid_of_file(src) and cid.startswith("bafybei")
        add_call = next(q for cmd, q in kubo.calls if cmd == "add")
        assert {k: add_call[k] for k in PROFILE} == PROFILE
        assert cid in kubo.pins
        out = client.cat(cid, tmp_path / "dl" / "copy")
        assert out.read_bytes() == src.read_bytes()
        client.pin(cid)


def test_cat_rejects_bytes_that_do_not_match_the_cid(tmp_path: Path) -> None:
    src = write_pattern(tmp_path / "a", 1000)
    with FakeKubo() as kubo:
        client = KuboClient(kubo.url)
        cid = client.add(src)
        kubo.corrupt_cat = True
        with pytest.raises(IpfsError, match="refusing"):
            client.cat(cid, tmp_path / "dl" / "a")
        assert list((tmp_path / "dl").iterdir()) == []
        with pytest.raises(IpfsError, match="larger than"):
            client.cat(cid, tmp_path / "dl" / "a", max_bytes=10)


def test_kubo_errors_and_unreachable_api_raise_ipfs_error(tmp_path: Path) -> None:
    with FakeKubo() as kubo:
        client = KuboClient(kubo.url)
        with pytest.raises(IpfsError, match=r"HTTP 500.*not found"):
            client.pin("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
        with pytest.raises(IpfsError, match="HTTP 500"):
            client.cat("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", tmp_path / "x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(IpfsError, match="unreachable"):
        KuboClient(f"http://127.0.0.1:{port}", timeout=2).version()


def test_add_detects_a_node_whose_profile_gives_other_cids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_pattern(tmp_path / "a", 2 << 20)
    monkeypatch.setitem(ADD_PARAMS, "raw-leaves", "false")
    with FakeKubo() as kubo, pytest.raises(IpfsError, match="profile differs"):
        KuboClient(kubo.url).add(src)


def test_host_fetch_falls_back_to_ipfs_by_cid(tmp_path: Path) -> None:
    import hashlib

    import trio
    from p2p_hosts import new_key, running_hosts

    src = write_pattern(tmp_path / "global.safetensors", (1 << 20) + 17)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    with FakeKubo() as kubo:
        cid = KuboClient(kubo.url).add(src)

        async def main() -> None:
            async with running_hosts([new_key()], tmp_path, ipfs_api_url=kubo.url) as (h,):
                out = await h.fetch(sha, [], tmp_path / "dl", max_bytes=10 << 20, timeout=5, cid=cid)
                assert out == tmp_path / "dl" / sha and out.read_bytes() == src.read_bytes()
                # a CID whose content does not hash to the requested sha256 is refused
                other = KuboClient(kubo.url).add(write_pattern(tmp_path / "other", 999))
                with pytest.raises(NoProviderError, match="hashes to"):
                    await h.fetch("cd" * 32, [], tmp_path / "dl", max_bytes=10 << 20, timeout=5, cid=other)
                assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [sha]

        trio.run(main)
