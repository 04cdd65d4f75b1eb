"""The institutions of a local federation and their data ([data] entries)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnet.errors import FederationError

SOURCES = (
    # institution name, train (source, split), eval (source, split)
    ("medqa-mainland", ("medqa-mainland", "dev"), ("medqa-mainland", "test")),
    ("medqa-us", ("medqa-us", "dev"), ("medqa-us", "test")),
    ("medmcqa", ("medmcqa", "train"), ("medmcqa", "eval")),
)


@dataclass(frozen=True)
class Site:
    """One institution: its name (also its published display name) and its data ([data] entries)."""

    name: str
    train: tuple[dict[str, Any], ...]
    eval: tuple[dict[str, Any], ...]


def load_site_plan(path: str | Path, n: int) -> list[Site]:
    """Sites from a TOML file of ``[[site]]`` tables (``name``, ``train``, ``eval``: [data] entries,
    paths relative to that file), one per node in order: ``medfed-localnet up --data FILE``."""
    import tomllib

    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FederationError(f"--data {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FederationError(f"--data {path}: not valid TOML ({exc})") from None
    raw = doc.get("site")
    if not isinstance(raw, list) or not raw:
        raise FederationError(
            f"--data {path}: needs [[site]] tables with name, train and eval (see docs/node.md)"
        )
    if len(raw) < n:
        raise FederationError(
            f"--data {path}: {len(raw)} [[site]] tables for {n} nodes; add sites or lower --nodes"
        )
    sites = []
    for i, item in enumerate(raw[:n]):
        if not isinstance(item, dict) or not {"name", "train", "eval"} <= set(item):
            raise FederationError(f"--data {path}: site {i + 1} needs name, train and eval")

        sites.append(
            Site(
                str(item["name"]),
                _absolute(item["train"], p, i),
                _absolute(item["eval"], p, i),
            )
        )
    return sites


def plan_sites(n: int) -> list[Site]:
    """Non-IID institutions: one source each for 3; more nodes split sources into hash shards."""
    if n < 1:
        raise FederationError("--nodes must be >= 1")
    per_source: dict[int, int] = {}
    for i in range(n):
        per_source[i % len(SOURCES)] = per_source.get(i % len(SOURCES), 0) + 1
    seen: dict[int, int] = {}
    sites = []
    for i in range(n):
        k = i % len(SOURCES)
        seen[k] = seen.get(k, 0) + 1
        name, (ts, tsplit), (es, esplit) = SOURCES[k]
        shards = per_source[k]
        extra = {"shard": f"{seen[k]}/{shards}"} if shards > 1 else {}
        label = f"{name}-{seen[k]}" if shards > 1 else name
        sites.append(
            Site(
                label,
                ({"source": ts, "split": tsplit, **extra},),
                ({"source": es, "split": esplit, **extra},),
            )
        )
    return sites


def _absolute(entries: Any, sites_file: Path, i: int) -> tuple[dict[str, Any], ...]:
    """[data] entries with their paths made absolute (relative to the sites file)."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FederationError(f"--data {sites_file}: site {i + 1}: train/eval must be lists of tables")
    return tuple(
        {**e, **({"path": str(sites_file.parent / e["path"])} if "path" in e else {})} for e in entries
    )
