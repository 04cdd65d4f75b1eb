"""An update names its author, round and federation in its hashed metadata (issue 12, B6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.adapter_io import (
    check_update_binding,
    read_adapter,
    read_metadata,
    update_metadata,
    write_canonical_adapter,
)
from training.errors import AdapterInvalid
from training.lora import LoraSettings

STATE = {"m.lora_A.weight": np.ones((2, 3), np.float32), "m.lora_B.weight": np.zeros((3, 2), np.float32)}
FED = "16166:0x00000000000000000000000000000000000000c0"
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20


def _write(tmp: Path, name: str, meta: dict[str, str] | None) -> tuple[str, Path]:
    settings = LoraSettings(rank=2, alpha=4, dropout=0.0, target_modules=("m",))
    sha = write_canonical_adapter(STATE, settings, "tiny", tmp / name, meta)
    return sha, tmp / name


def test_binding_changes_the_hash_and_is_checked(tmp_path: Path) -> None:
    plain, _ = _write(tmp_path, "plain", None)
    a1, pa1 = _write(tmp_path, "a1", update_metadata(ALICE.upper().replace("0X", "0x"), 1, FED))
    b1, _ = _write(tmp_path, "b1", update_metadata(BOB, 1, FED))
    a2, _ = _write(tmp_path, "a2", update_metadata(ALICE, 2, FED))
    other, _ = _write(tmp_path, "o", update_metadata(ALICE, 1, "16166:0x" + "d" * 40))
    # identical tensors, five different files: a hash says who, when and where
    assert len({plain, a1, b1, a2, other}) == 5
    assert read_metadata(pa1)["medfed.author"] == ALICE
    np.testing.assert_array_equal(read_adapter(pa1)["m.lora_A.weight"], STATE["m.lora_A.weight"])
    check_update_binding(pa1, ALICE, 1, FED)
    with pytest.raises(AdapterInvalid, match="author"):
        check_update_binding(pa1, BOB, 1, FED)  # a copied hash committed by another member
    with pytest.raises(AdapterInvalid, match="round"):
        check_update_binding(pa1, ALICE, 2, FED)  # replayed in a later round
    with pytest.raises(AdapterInvalid, match="federation"):
        check_update_binding(pa1, ALICE, 1, "1:0x" + "e" * 40)
    with pytest.raises(AdapterInvalid, match="author"):
        check_update_binding(tmp_path / "plain", ALICE, 1, FED)  # no binding at all
