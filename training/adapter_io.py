"""Canonical PEFT adapter files, reading them back, and validating adapters received from peers.

Canonical ``adapter_model.safetensors``: tensors in sorted name order, all float32 little-endian,
header JSON with sorted keys and no whitespace, metadata ``{"format": "pt"}`` (aggregates and
global adapters) or that plus the update's binding to its author, round and federation
(``medfed.author``, ``medfed.round``, ``medfed.federation``: see `update_metadata`), header padded
with spaces to a multiple of 8 bytes. We write the bytes ourselves (the format is tiny) so the
sha256 does not depend on the safetensors library version.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import AdapterInvalid
from training.lora import LoraSettings, adapter_keys, lora_targets

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
WIRE_DTYPE = "F32"
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None, "I64": np.int64}
MAX_HEADER = 100 * 1024 * 1024
# Room for metadata beyond the canonical header of an adapter's tensors (e.g. author and round
# bound into ``__metadata__``): the largest file of a spec is its canonical size plus this.
HEADER_SLACK = 16 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=np.float32))


def canonical_safetensors_bytes(state: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """The canonical safetensors encoding of ``state`` (float32, sorted names); ``metadata`` (string
    values) joins ``{"format": "pt"}`` in the header (an update's binding, see `update_metadata`)."""
    arrays = {k: _as_numpy(state[k]) for k in sorted(state)}
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, arr in arrays.items():
        header[name] = {
            "dtype": WIRE_DTYPE,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    parts = [struct.pack("<Q", len(text)), text]
    parts.extend(arr.astype("<f4", copy=False).tobytes() for arr in arrays.values())
    return b"".join(parts)


def adapter_config_dict(settings: LoraSettings, base_model: str) -> dict[str, Any]:
    """The ``adapter_config.json`` content peft needs, fixed and free of paths or versions."""
    return {
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "peft_type": "LORA",
        "r": settings.rank,
        "target_modules": sorted(settings.target_modules),
        "task_type": "CAUSAL_LM",
        "use_rslora": False,
    }


def _state_rank(state: Mapping[str, Any]) -> int:
    ranks = {int(np.shape(state[k])[0]) for k in state if k.endswith("lora_A.weight")}
    if len(ranks) != 1:
        raise AdapterInvalid(f"adapter has LoRA A matrices of ranks {sorted(ranks)}; expected one rank")
    return ranks.pop()


def write_canonical_adapter(
    state: Mapping[str, Any],
    settings: LoraSettings,
    base_model: str,
    out_dir: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` into ``out_dir``; return the
    safetensors sha256 hex. If the state's rank is a multiple n of ``settings.rank`` (an ``exact``
    aggregate) the config records ``settings.stacked(n)`` so that alpha/r, hence the delta, is kept."""
    rank = _state_rank(state)
    if rank != settings.rank:
        if rank % settings.rank:
            raise AdapterInvalid(
                f"adapter rank {rank} is not a multiple of the federation rank {settings.rank}"
            )
        settings = settings.stacked(rank // settings.rank)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = canonical_safetensors_bytes(state, metadata)
    _atomic_write(out / WEIGHTS_NAME, data)
    config = json.dumps(adapter_config_dict(settings, base_model), sort_keys=True, indent=2) + "\n"
    _atomic_write(out / CONFIG_NAME, config.encode())
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ update binding (issue 12, B6)
AUTHOR_KEY = "medfed.author"
ROUND_KEY = "medfed.round"
FEDERATION_KEY = "medfed.federation"


def update_metadata(author: str, round: int, federation: str) -> dict[str, str]:
    """The fixed metadata that binds an update to its author (lowercase address), round and
    federation (``<chain id>:<coordinator>``): part of the hashed bytes, so a copied hash names
    its true author, and updates differ across federations and rounds even from equal seeds."""
    return {AUTHOR_KEY: author.lower(), ROUND_KEY: str(int(round)), FEDERATION_KEY: federation.lower()}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when absent or not a string map)."""
    p = _weights_path(path)
    _read_header(p)  # the same sanity checks as every reader
    with p.open("rb") as fh:
        (hlen,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(hlen)).get("__metadata__", {})
    if not isinstance(meta, dict):
        return {}
    return {str(k): v for k, v in meta.items() if isinstance(v, str)}


def check_update_binding(path: str | os.PathLike[str], author: str, round: int, federation: str) -> None:
    """Raise :class:`AdapterInvalid` unless the update file names ``author``, ``round`` and
    ``federation`` in its metadata (a committer of someone else's hash, or a replayed update)."""
    meta = read_metadata(path)
    want = update_metadata(author, round, federation)
    for key, value in want.items():
        got = meta.get(key)
        if got != value:
            raise AdapterInvalid(
                f"update names {key.split('.')[1]} {got!r}, but it was committed for {value!r}"
                " (a copied or replayed update)"
            )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _weights_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / WEIGHTS_NAME if p.is_dir() else p


def _read_header(path: Path, max_bytes: int | None = None) -> tuple[dict[str, Any], int]:
    """Parse and sanity-check a safetensors header; return (tensor entries, data start offset)."""
    if not path.is_file():
        raise AdapterInvalid(f"{path}: no such file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise AdapterInvalid(f"{path}: {size} bytes exceeds the limit of {max_bytes} bytes")
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise AdapterInvalid(f"{path}: not safetensors (shorter than 8 bytes)")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > min(MAX_HEADER, size - 8):
            raise AdapterInvalid(f"{path}: not safetensors (header length {hlen} is beyond the file)")
        raw = fh.read(hlen)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdapterInvalid(f"{path}: not safetensors (header is not JSON)") from None
    if not isinstance(header, dict):
        raise AdapterInvalid(f"{path}: not safetensors (header is not a JSON object)")
    header.pop("__metadata__", None)
    data_len = size - 8 - hlen
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        except (KeyError, TypeError, ValueError):
            raise AdapterInvalid(f"{path}: not safetensors (bad header entry for {name!r})") from None
        width = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8}.get(dtype)
        if width is not None and end - start != count * width:
            raise AdapterInvalid(
                f"{path}: tensor {name!r} has {end - start} bytes, shape {shape} needs {count * width}"
            )
        if not 0 <= start <= end <= data_len:
            raise AdapterInvalid(f"{path}: tensor {name!r} data lies outside the file (truncated?)")
        spans.append((start, end))
    return header, 8 + hlen


def read_adapter(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an adapter (directory or ``.safetensors`` file) into {name: float32 array}."""
    p = _weights_path(path)
    header, base = _read_header(p)
    out: dict[str, np.ndarray] = {}
    with p.open("rb") as fh:
        for name in sorted(header):
            entry = header[name]
            if entry["dtype"] not in _DTYPES or _DTYPES[entry["dtype"]] is None:
                raise AdapterInvalid(f"{p}: tensor {name!r} has unsupported dtype {entry['dtype']}")
            start, end = entry["data_offsets"]
            fh.seek(base + start)
            arr = np.frombuffer(
                fh.read(end - start), dtype=np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            )
            out[name] = arr.reshape(entry["shape"]).astype(np.float32)
    return out


@dataclass(frozen=True)
class AdapterSpec:
    """What a valid adapter of this federation looks like: {tensor name: shape}, all float32."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def from_model(cls, model: Any, settings: LoraSettings, rank: int | None = None) -> AdapterSpec:
        """Expected keys and shapes for ``model`` with ``settings`` (``rank`` overrides, e.g. n*r)."""
        r = rank if rank is not None else settings.rank
        shapes: dict[str, tuple[int, ...]] = {}
        for name, (out_f, in_f) in lora_targets(model, settings).items():
            key_a, key_b = adapter_keys(name)
            shapes[key_a] = (r, in_f)
            shapes[key_b] = (out_f, r)
        return cls(tuple(sorted(shapes.items())))

    @classmethod
    def from_adapter(cls, path: str | os.PathLike[str]) -> AdapterSpec:
        """The keys and shapes of a trusted reference adapter (e.g. the federation's initial one)."""
        header, _ = _read_header(_weights_path(path))
        return cls(tuple(sorted((k, tuple(int(d) for d in v["shape"])) for k, v in header.items())))

    def with_rank(self, rank: int) -> AdapterSpec:
        """The same modules at another LoRA rank (an ``exact`` aggregate has rank n*r)."""
        out = []
        for k, shape in self.shapes:
            out.append((k, (rank, shape[1]) if "lora_A" in k else (shape[0], rank)))
        return AdapterSpec(tuple(out))

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.shapes)

    def max_file_bytes(self) -> int:
        """The largest file a valid adapter of this spec can be: 8 + its canonical header (plus
        ``HEADER_SLACK`` for metadata) + 4 bytes per value. Transfers stop beyond it."""
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in self.shapes:
            n = int(np.prod(shape, dtype=np.int64)) * 4
            header[name] = {"dtype": WIRE_DTYPE, "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        text = json.dumps(header, sort_keys=True, separators=(",", ":"))
        return 8 + len(text) + 8 + HEADER_SLACK + offset


def _check_layout(path: Path, header: Mapping[str, Any], base: int) -> None:
    """The file is exactly 8 + header + tensor bytes: the tensors' byte ranges are contiguous,
    do not overlap and cover the whole data section, with nothing after the last one (B1: valid
    tensors followed by megabytes of trailing bytes would otherwise pass, and be paid)."""
    size = path.stat().st_size
    spans = sorted((tuple(e["data_offsets"]), name) for name, e in header.items())
    at = 0
    for (start, end), name in spans:
        if start != at:
            what = (
                "overlaps the previous tensor"
                if start < at
                else f"leaves {start - at} bytes unused before it"
            )
            raise AdapterInvalid(f"{path}: tensor {name!r} at data offset {start} {what}")
        at = end
    if base + at != size:
        raise AdapterInvalid(
            f"{path}: {size - base - at} trailing bytes after the tensor data (file is {size} bytes, "
            f"header and tensors take {base + at}); not a canonical adapter"
        )


def validate_adapter(path: str | os.PathLike[str], spec: AdapterSpec, max_bytes: int) -> None:
    """Raise :class:`AdapterInvalid` with the reason unless ``path`` (dir or file) is a safetensors
    adapter with exactly ``spec``'s keys and shapes, float32, all values finite, at most ``max_bytes``
    and exactly as long as its header and tensors (no gaps, overlaps or trailing bytes)."""
    p = _weights_path(path)
    largest = spec.max_file_bytes()
    if p.is_file() and p.stat().st_size > largest and largest <= max_bytes:
        raise AdapterInvalid(
            f"{p}: {p.stat().st_size} bytes, more than an adapter of this federation can be "
            f"({largest} bytes at most)"
        )
    header, base = _read_header(p, max_bytes)
    expected = dict(spec.shapes)
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing:
        raise AdapterInvalid(f"{p}: {len(missing)} missing tensor(s), e.g. {missing[0]!r}")
    if extra:
        raise AdapterInvalid(f"{p}: {len(extra)} unexpected tensor(s), e.g. {extra[0]!r}")
    for name in sorted(expected):
        entry = header[name]
        if entry["dtype"] != WIRE_DTYPE:
            raise AdapterInvalid(f"{p}: tensor {name!r} is {entry['dtype']}, expected {WIRE_DTYPE}")
        if tuple(entry["shape"]) != expected[name]:
            raise AdapterInvalid(
                f"{p}: tensor {name!r} has shape {tuple(entry['shape'])}, expected {expected[name]}"
            )
    _check_layout(p, header, base)
    with p.open("rb") as fh:
        for name in sorted(expected):
            start, end = header[name]["data_offsets"]
            fh.seek(base + start)
            arr = np.frombuffer(fh.read(end - start), dtype="<f4")
            if not np.isfinite(arr).all():
                raise AdapterInvalid(f"{p}: tensor {name!r} contains NaN or Inf")
