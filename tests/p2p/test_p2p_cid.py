"""CIDs computed in Python equal those of a real IPFS importer (vectors from scripts/cid-vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p.cid import cid_of_bytes, cid_of_chunks, cid_of_file
from p2p.errors import CidError
from p2p.testdata import pattern_chunks

VECTORS = json.loads((Path(__file__).parent / "cid_vectors.json").read_text())["vectors"]


def _params() -> list[object]:
    return [pytest.param(v, id=v["name"], marks=[pytest.mark.slow] if v["slow"] else []) for v in VECTORS]


@pytest.mark.parametrize("vector", _params())
def test_cid_matches_js_ipfs_importer(vector: dict[str, object]) -> None:
    assert vector["content"] == "pattern-v1"
    size = vector["size"]
    assert isinstance(size, int)
    assert cid_of_chunks(pattern_chunks(size)) == vector["cid"]


def test_vectors_cover_raw_leaf_one_layer_and_two_layers() -> None:
    sizes = {v["size"] for v in VECTORS}
    assert {0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 << 20} <= sizes
    assert max(sizes) > 1024 << 20  # more than 1024 chunks: a second layer of links


def test_file_bytes_and_odd_piece_sizes_agree(tmp_path: Path) -> None:
    size = 5 * (1 << 20) + 3
    data = b"".join(pattern_chunks(size))
    path = tmp_path / "adapter.bin"
    path.write_bytes(data)
    expected = next(v["cid"] for v in VECTORS if v["size"] == size)
    assert cid_of_file(path) == expected
    assert cid_of_bytes(data) == expected
    pieces = [data[i : i + 77_777] for i in range(0, len(data), 77_777)]
    assert cid_of_chunks(pieces) == expected


def test_missing_file_raises_cid_error(tmp_path: Path) -> None:
    with pytest.raises(CidError, match="cannot read"):
        cid_of_file(tmp_path / "nope")
