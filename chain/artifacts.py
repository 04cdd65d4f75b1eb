"""Compiled contract artifacts (contracts/build/<Name>.json) and their compiler (solc-js).

`python -m chain.artifacts --compile` recompiles from contracts/src; `--check` fails if the
committed artifacts differ from a fresh compile.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.errors import ArtifactError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = Path(os.environ.get("MEDFED_CONTRACTS_DIR", REPO_ROOT / "contracts"))
BUILD_DIR = CONTRACTS_DIR / "build"
CONTRACT_NAMES = ("Coordinator", "RewardToken")


@dataclass(frozen=True)
class Artifact:
    """ABI and bytecode of one compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    solc: str
    source_sha256: str


@functools.cache
def load_artifact(name: str, build_dir: Path | None = None) -> Artifact:
    """The committed artifact of contract `name`."""
    path = (build_dir or BUILD_DIR) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing artifact: run `python -m chain.artifacts --compile`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"{path}: unreadable artifact ({exc}): run `python -m chain.artifacts --compile`"
        ) from None
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        solc=data["solc"],
        source_sha256=data["sourceSha256"],
    )


EVM_VERSION = "homestead"  # the committed artifacts' target: runs on pre-Byzantium and Istanbul rules


def compile_contracts(out_dir: Path | None = None, evm_version: str = EVM_VERSION) -> list[Path]:
    """Compile contracts/src with solc-js (contracts/compile.js) into `out_dir` (default contracts/build).

    `evm_version` other than the default is for measurements (bench/gas.py), never committed.
    """
    node = shutil.which("node")
    if node is None:
        raise ArtifactError("node not found: install Node.js (and run `npm ci`) to compile the contracts")
    out = out_dir or BUILD_DIR
    proc = subprocess.run(
        [node, str(CONTRACTS_DIR / "compile.js"), str(out), evm_version],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["unknown error"])[0]
        raise ArtifactError(f"solc-js failed: {first} (run `npm ci` if solc is missing)")
    load_artifact.cache_clear()
    return sorted(out.glob("*.json"))


def stale_artifacts() -> list[str]:
    """Names of committed artifacts that differ from a fresh compile of contracts/src."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = compile_contracts(Path(tmp))
        stale = []
        for path in fresh:
            committed = BUILD_DIR / path.name
            if not committed.exists() or json.loads(committed.read_text()) != json.loads(path.read_text()):
                stale.append(path.stem)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chain.artifacts", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--compile", action="store_true", help="recompile contracts/src into contracts/build")
    group.add_argument("--check", action="store_true", help="fail if contracts/build is stale")
    args = parser.parse_args(argv)
    try:
        if args.compile:
            for p in compile_contracts():
                print(f"wrote {p}")
            return 0
        stale = stale_artifacts()
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stale:
        print(
            f"stale artifacts: {', '.join(stale)}: run `python -m chain.artifacts --compile`", file=sys.stderr
        )
        return 1
    print("artifacts are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
