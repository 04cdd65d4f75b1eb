"""Canonical adapter bytes, peft loading, reading back, and the validator."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.adapter_io import (
    AdapterSpec,
    canonical_safetensors_bytes,
    read_adapter,
    sha256_file,
    validate_adapter,
    write_canonical_adapter,
)
from training.errors import AdapterInvalid
from training.lora import LoraSettings, initial_adapter_state

REPO = Path(__file__).resolve().parents[2]

WRITE_SCRIPT = """
import sys
import numpy as np
from training.adapter_io import write_canonical_adapter
from training.lora import LoraSettings
rng = np.random.default_rng(3)
state = {}
for layer in range(3):
    for proj, (out_f, in_f) in {"self_attn.q_proj": (32, 64), "mlp.down_proj": (64, 48)}.items():
        base = f"base_model.model.model.layers.{layer}.{proj}"
        state[base + ".lora_A.weight"] = rng.standard_normal((4, in_f)).astype(np.float32)
        state[base + ".lora_B.weight"] = rng.standard_normal((out_f, 4)).astype(np.float32)
# reversed insertion order and float64 copies must not change the bytes
state = {k: state[k].astype(np.float64) for k in reversed(list(state))}
print(write_canonical_adapter(state, LoraSettings(rank=4, alpha=8), "medfed/tiny-llama", sys.argv[1]))
"""


def _trained_like(model: Any, settings: LoraSettings, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = initial_adapter_state(model, settings, seed)
    return {
        k: (v if "lora_A" in k else rng.normal(0, 0.1, v.shape).astype(np.float32)) for k, v in state.items()
    }


def test_canonical_bytes_identical_across_two_processes_and_two_runs(tmp_path: Path) -> None:
    hashes = []
    for i in range(2):
        out = subprocess.run(
            [sys.executable, "-c", WRITE_SCRIPT, str(tmp_path / f"run{i}")],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        hashes.append(out.stdout.strip().splitlines()[-1])
    assert hashes[0] == hashes[1] == sha256_file(tmp_path / "run0" / "adapter_model.safetensors")
    assert (tmp_path / "run0" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "run1" / "adapter_model.safetensors"
    ).read_bytes()
    assert (tmp_path / "run0" / "adapter_config.json").read_bytes() == (
        tmp_path / "run1" / "adapter_config.json"
    ).read_bytes()


def test_canonical_bytes_do_not_depend_on_insertion_order_or_torch_vs_numpy() -> None:
    state = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones((1, 2), np.float32)}
    reordered = {"a": torch.ones(1, 2), "b": torch.arange(6.0).reshape(2, 3)}
    assert canonical_safetensors_bytes(state) == canonical_safetensors_bytes(reordered)
    changed = {**state, "a": np.full((1, 2), 2.0, np.float32)}
    assert canonical_safetensors_bytes(changed) != canonical_safetensors_bytes(state)


def test_canonical_file_is_standard_safetensors_and_reads_back(
    tiny: Any, settings: LoraSettings, tmp_path: Path
) -> None:
    from safetensors import safe_open

    model, _ = tiny
    state = _trained_like(model, settings, 1)
    write_canonical_adapter(state, settings, "medfed/tiny-llama", tmp_path)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "np") as fh:
        assert fh.metadata() == {"format": "pt"}
        assert sorted(fh.keys()) == sorted(state)
    back = read_adapter(tmp_path)
    assert list(back) == sorted(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"


def test_peft_from_pretrained_loads_canonical_adapter(settings: LoraSettings, tmp_path: Path) -> None:
    from peft import PeftModel

    from training.models import build_tiny_model

    model, _ = build_tiny_model(seed=0)
    state = _trained_like(model, settings, 2)
    write_canonical_adapter(state, settings, "medfed/tiny-llama", tmp_path)
    ids = torch.tensor([[10, 20, 30, 40]])
    with torch.no_grad():
        base = model(ids).logits
        peft_model = PeftModel.from_pretrained(model, str(tmp_path))
        adapted = peft_model(ids).logits
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    key = next(k for k in loaded if "q_proj.lora_B" in k)
    expected = state[key.replace(".default", "")]
    assert np.array_equal(loaded[key].numpy(), expected)
    assert not torch.allclose(base, adapted)


def test_exact_rank_adapter_records_stacked_rank_and_alpha(
    tiny: Any, settings: LoraSettings, tmp_path: Path
) -> None:
    model, _ = tiny
    state = initial_adapter_state(model, settings.stacked(3), seed=0)
    write_canonical_adapter(state, settings, "m", tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 12 and config["lora_alpha"] == 24
    odd = initial_adapter_state(model, LoraSettings(rank=5), seed=0)
    with pytest.raises(AdapterInvalid, match="not a multiple"):
        write_canonical_adapter(odd, settings, "m", tmp_path / "odd")


@pytest.fixture()
def good(tiny: Any, settings: LoraSettings, tmp_path: Path) -> tuple[dict[str, np.ndarray], AdapterSpec]:
    model, _ = tiny
    state = _trained_like(model, settings, 4)
    write_canonical_adapter(state, settings, "m", tmp_path / "good")
    return state, AdapterSpec.from_model(model, settings)


def _write(path: Path, state: dict[str, np.ndarray]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(canonical_safetensors_bytes(state))
    return path


def test_validator_accepts_a_good_adapter_and_specs_agree(good: Any, tmp_path: Path) -> None:
    _, spec = good
    validate_adapter(tmp_path / "good", spec, max_bytes=10**7)
    validate_adapter(tmp_path / "good" / "adapter_model.safetensors", spec, max_bytes=10**7)
    assert AdapterSpec.from_adapter(tmp_path / "good") == spec
    assert spec.with_rank(8).with_rank(4) == spec


def _mutations(state: dict[str, np.ndarray]) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    first = sorted(state)[0]
    b_key = next(k for k in sorted(state) if "lora_B" in k)
    nan = dict(state)
    nan[b_key] = state[b_key].copy()
    nan[b_key][0, 0] = np.nan
    inf = dict(state)
    inf[b_key] = state[b_key].copy()
    inf[b_key][-1, -1] = -np.inf
    return {
        "missing": ({k: v for k, v in state.items() if k != first}, "missing tensor"),
        "extra": (
            {**state, "base_model.model.lm_head.lora_A.weight": np.zeros((4, 2), np.float32)},
            "unexpected",
        ),
        "shape": ({**state, first: np.zeros((5, state[first].shape[1]), np.float32)}, "has shape"),
        "nan": (nan, "NaN or Inf"),
        "inf": (inf, "NaN or Inf"),
    }


@pytest.mark.parametrize("kind", ["missing", "extra", "shape", "nan", "inf"])
def test_validator_rejects_bad_contents(good: Any, tmp_path: Path, kind: str) -> None:
    state, spec = good
    bad, reason = _mutations(state)[kind]
    with pytest.raises(AdapterInvalid, match=reason):
        validate_adapter(_write(tmp_path / kind, bad), spec, max_bytes=10**7)


def test_validator_rejects_wrong_dtype(good: Any, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    state, spec = good
    (tmp_path / "f16").mkdir()
    save_file(
        {k: v.astype(np.float16) for k, v in state.items()},
        str(tmp_path / "f16" / "adapter_model.safetensors"),
    )
    with pytest.raises(AdapterInvalid, match="is F16, expected F32"):
        validate_adapter(tmp_path / "f16", spec, max_bytes=10**7)


def test_validator_rejects_too_large_and_not_safetensors(good: Any, tmp_path: Path) -> None:
    _, spec = good
    size = (tmp_path / "good" / "adapter_model.safetensors").stat().st_size
    with pytest.raises(AdapterInvalid, match="exceeds the limit"):
        validate_adapter(tmp_path / "good", spec, max_bytes=size - 1)
    junk = tmp_path / "junk.safetensors"
    for payload in [
        b"",
        b"PK\x03\x04 zip file",
        struct.pack("<Q", 5) + b"{oops",
        struct.pack("<Q", 2) + b"[]",
    ]:
        junk.write_bytes(payload)
        with pytest.raises(AdapterInvalid, match="not safetensors"):
            validate_adapter(junk, spec, max_bytes=10**7)
    with pytest.raises(AdapterInvalid, match="no such file"):
        validate_adapter(tmp_path / "absent", spec, max_bytes=10**7)


def test_validator_rejects_truncated_file(good: Any, tmp_path: Path) -> None:
    _, spec = good
    data = (tmp_path / "good" / "adapter_model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-16])
    with pytest.raises(AdapterInvalid, match="outside the file"):
        validate_adapter(tmp_path / "cut.safetensors", spec, max_bytes=10**7)


def _raw(header: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def test_validator_rejects_trailing_bytes_gaps_and_overlaps(good: Any, tmp_path: Path) -> None:
    """B1: valid tensors followed by extra bytes (or with holes between them) are not an adapter."""
    state, spec = good
    data = (tmp_path / "good" / "adapter_model.safetensors").read_bytes()
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(data + bytes(4096))
    with pytest.raises(AdapterInvalid, match="4096 trailing bytes after the tensor data"):
        validate_adapter(padded, spec, max_bytes=10**7)
    # far beyond what any adapter of the spec can be: refused on its size alone
    padded.write_bytes(data + bytes(spec.max_file_bytes()))
    with pytest.raises(AdapterInvalid, match="more than an adapter of this federation can be"):
        validate_adapter(padded, spec, max_bytes=10**9)

    names = sorted(state)
    blobs = [state[k].astype("<f4").tobytes() for k in names]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    at = 0
    for k, b in zip(names, blobs, strict=True):  # a 4-byte hole before every tensor
        header[k] = {"dtype": "F32", "shape": list(state[k].shape), "data_offsets": [at + 4, at + 4 + len(b)]}
        at += 4 + len(b)
    gap = tmp_path / "gap.safetensors"
    gap.write_bytes(_raw(header, b"".join(bytes(4) + b for b in blobs)))
    with pytest.raises(AdapterInvalid, match="leaves 4 bytes unused"):
        validate_adapter(gap, spec, max_bytes=10**7)

    header = {"__metadata__": {"format": "pt"}}
    at = 0
    for k, b in zip(names, blobs, strict=True):  # every tensor shares the first tensor's bytes
        header[k] = {"dtype": "F32", "shape": list(state[k].shape), "data_offsets": [0, len(b)]}
        at = max(at, len(b))
    overlap = tmp_path / "overlap.safetensors"
    overlap.write_bytes(_raw(header, bytes(at)))
    with pytest.raises(AdapterInvalid, match="overlaps the previous tensor"):
        validate_adapter(overlap, spec, max_bytes=10**7)


def test_max_file_bytes_is_the_canonical_size_plus_header_slack(good: Any, tmp_path: Path) -> None:
    from training.adapter_io import HEADER_SLACK

    _, spec = good
    size = (tmp_path / "good" / "adapter_model.safetensors").stat().st_size
    assert size <= spec.max_file_bytes() <= size + HEADER_SLACK + 8
