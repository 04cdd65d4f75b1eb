"""Adapters held by this node, one folder per sha256: ``<state>/adapters/<sha256>/``.

Each folder is a loadable PEFT adapter (``adapter_model.safetensors`` + ``adapter_config.json``).
Only the safetensors file is content-addressed and transferred; the config is rebuilt locally
from the federation's LoRA settings, so a peer cannot smuggle options into it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.errors import ArtifactError
from node.state import StateStore
from training.adapter_io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    adapter_config_dict,
    sha256_file,
    write_canonical_adapter,
)
from training.lora import LoraSettings


class ArtifactStore:
    """Content-addressed adapter folders plus their index in the state store."""

    def __init__(self, state_dir: Path, store: StateStore, settings: LoraSettings, base_model: str) -> None:
        self.root = state_dir / "adapters"
        self.incoming = state_dir / "incoming"
        self.scratch = state_dir / "scratch"
        for d in (self.root, self.incoming, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.settings = settings
        self.base_model = base_model

    def folder(self, sha256: str) -> Path:
        """Folder of an adapter (whether or not we hold it)."""
        return self.root / sha256

    def weights(self, sha256: str) -> Path | None:
        """The safetensors file of an adapter we hold, else None."""
        p = self.folder(sha256) / WEIGHTS_NAME
        return p if p.is_file() else None

    def has(self, sha256: str) -> bool:
        """Whether we hold this adapter."""
        return self.weights(sha256) is not None

    def put_state(
        self, state: dict[str, Any], kind: str, round: int, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Write tensors canonically (with ``metadata``: an update's binding), file them under their
        sha256, return it."""
        tmp = self.scratch / uuid.uuid4().hex
        try:
            sha = write_canonical_adapter(state, self.settings, self.base_model, tmp, metadata)
            self._install(sha, tmp, kind, round)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sha

    def import_file(self, sha256: str, path: Path, kind: str, round: int) -> Path:
        """Adopt a verified safetensors file (moved) and write its config; return the weights path."""
        got = sha256_file(path)
        if got != sha256:
            raise ArtifactError(
                f"{path}: sha256 {got[:12]} is not the expected {sha256[:12]}; file discarded"
            )
        tmp = self.scratch / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        try:
            shutil.move(str(path), tmp / WEIGHTS_NAME)
            self._install(sha256, tmp, kind, round)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        weights = self.weights(sha256)
        assert weights is not None
        return weights

    def adopt_dir(self, sha256: str, folder: Path, kind: str, round: int) -> None:
        """Adopt an adapter folder written by training (moved), after checking its sha256."""
        got = sha256_file(folder / WEIGHTS_NAME)
        if got != sha256:
            raise ArtifactError(f"{folder}: sha256 {got[:12]} is not the expected {sha256[:12]}")
        try:
            self._install(sha256, folder, kind, round)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _install(self, sha: str, tmp: Path, kind: str, round: int) -> None:
        cfg = tmp / CONFIG_NAME
        if not cfg.exists():
            rank = _rank_of(tmp / WEIGHTS_NAME)
            settings = self.settings
            if rank != settings.rank and rank % settings.rank == 0:
                settings = settings.stacked(rank // settings.rank)
            cfg.write_text(
                json.dumps(adapter_config_dict(settings, self.base_model), sort_keys=True, indent=2) + "\n"
            )
        dest = self.folder(sha)
        if not (dest / WEIGHTS_NAME).is_file():
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        self.store.add_artifact(sha, dest / WEIGHTS_NAME, kind, round)


def _rank_of(weights: Path) -> int:
    from training.adapter_io import AdapterSpec

    spec = AdapterSpec.from_adapter(weights)
    for key, shape in spec.shapes:
        if key.endswith("lora_A.weight"):
            return int(shape[0])
    raise ArtifactError(f"{weights}: no LoRA A tensor; not an adapter")
