"""medfed.toml: the site's configuration, loaded into frozen dataclasses and validated.

Every problem raises ConfigError("medfed.toml: [section] key: what is wrong; how to fix it").
Relative paths (state_dir, data files, initial adapter) are relative to the config file's folder.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.peer_record import check_name
from node.errors import ConfigError

PROFILES = ("auto", "devnet", "cypherium")
SOURCES = ("medqa-us", "medqa-mainland", "medmcqa")
FORMATS = ("medqa", "medmcqa", "mc", "chat", "prompt-completion")
TABLE_FORMATS = ("mc", "chat", "prompt-completion")  # read with HF datasets: .jsonl/.json/.csv/.parquet
DTYPES = ("auto", "float32", "bfloat16", "float16")
PARTS = ("all", "train", "eval")
STRATEGIES = ("fedavg", "exact")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class ChainSection:
    """Where the federation's coordinator lives and how to send transactions to it."""

    rpc_url: str
    coordinator: str
    profile: str = "auto"  # node.chainkind: "auto" picks it from the chain's client version
    gas_price_gwei: float = 0.0  # 0 = the profile's default
    start_block: int = 0  # events are read from here (the deployment block)
    # node/keepalive.py: a keepalive transaction after this many seconds without a block;
    # None = "auto" (60 on a chain that makes blocks only on demand, i.e. Cypherium; off on anvil)
    keepalive_s: float | None = None


@dataclass(frozen=True)
class P2PSection:
    """libp2p listen/announce addresses, static bootstrap peers, optional IPFS (Kubo) API."""

    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    announce: tuple[str, ...] = ()  # published on-chain; empty = the addresses the host listens on
    bootstrap: tuple[str, ...] = ()
    ipfs_api: str = ""
    # flood limits (docs/p2p.md "Flood limits"): what one peer may cost this node
    gossip_rate: float = 10.0  # announcements/s one member may have accepted, sustained
    gossip_burst: int = 100  # ... and at once
    max_streams_per_peer: int = 1  # adapter requests served to one peer at once; more: "busy"
    max_streams: int = 64  # ... to all peers together
    # issue 19, circuit relay v2 (docs/p2p.md "Firewalls and relays")
    relay: bool = False  # relay other members' traffic (needs a reachable address)
    reachability: str = "public"  # "private": accept no inbound connection, be reached via relays
    relays: tuple[str, ...] = ()  # relay multiaddrs to reserve on (e.g. a `medfed-node relay`)
    relay_max_reservations: int = 32  # members holding a reservation on this relay at once
    relay_circuit_mb: int = 4096  # bytes one relayed connection may carry, then it is re-dialled
    hole_punch: bool = True  # DCUtR: try to turn a relayed connection into a direct one


@dataclass(frozen=True)
class DataFile:
    """One dataset: a known source split, or a file of a known format; optionally a hash part/shard."""

    source: str = ""
    split: str = ""
    path: str = ""
    format: str = ""
    part: str = "all"  # "train"/"eval": deterministic hash split of the rows (eval_fraction)
    eval_fraction: float = 0.2
    shard: str = ""  # "k/n": keep the k-th of n hash shards (1-based), for several sites per source
    columns: tuple[tuple[str, str | tuple[str, ...]], ...] = ()  # mc/chat/prompt-completion column names
    answer_base: int = 0  # mc: an integer answer counts options from 0 or 1
    language: str = "en"  # mc: language of the prompt's instructions ("en" or "zh")

    def describe(self) -> str:
        """Short label used in logs and in the eval-set hash."""
        what = f"{self.source}:{self.split}" if self.source else f"{self.format}:{self.path}"
        extra = "" if self.part == "all" else f"#{self.part}"
        return what + extra + (f"@{self.shard}" if self.shard else "")


@dataclass(frozen=True)
class DataSection:
    """Private training data and held-out evaluation data of this site (never leaves the site)."""

    name: str
    train: tuple[DataFile, ...]
    eval: tuple[DataFile, ...]
    train_per_round: int = 64  # questions per round, taken in a rotating window; 0 = all
    eval_limit: int = 200  # held-out questions evaluated; 0 = all


@dataclass(frozen=True)
class ModelSection:
    """Base model, LoRA shape (must match the federation's on-chain config hash) and local training."""

    base: str = "default"
    initial_adapter: str = ""  # optional local copy of the federation's initial adapter
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    max_length: int = 256
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default
    device: str = ""  # "cpu", "cuda", "cuda:1", ...; "" = cuda when available, else cpu
    dtype: str = "auto"  # base weights: auto = bfloat16 on CUDA, float32 on CPU
    load_in_4bit: bool = False  # QLoRA: 4-bit NF4 base weights via bitsandbytes (CUDA only)
    gradient_checkpointing: bool = False  # trade compute for activation memory
    strategy: str = "fedavg"
    max_adapter_mb: int = 512
    # bounds on updates (training/bounds.py); with strategy, part of the on-chain config hash
    max_abs: float = 100.0
    max_update_norm: float = 0.0
    clip_factor: float = 3.0
    max_samples: int = 0
    samples_factor: float = 4.0
    min_update_ratio: float = 0.1
    min_agreement: float = 0.0
    fallback_after: int = 2


@dataclass(frozen=True)
class RoundsSection:
    """When this node opens rounds by itself."""

    auto_open: bool = True
    last_round: int = 0  # stop opening rounds after this one; 0 = never stop
    poll_interval_s: float = 2.0
    open_first_round: bool = True  # also open round 1 (a launcher that opens it itself sets false)
    fetch_patience_s: float = 120.0  # give up on an unreachable update after this long
    stagger_s: float = 2.0  # housekeeping txs (advance/finalize/open) wait rank * stagger_s
    # how often to ask for the latest block; a new block with a coordinator event wakes the round
    # machine at once (0 = off: only poll_interval_s)
    watch_interval_s: float = 0.5


PRIVACY_MODES = ("off", "dp-sgd")


@dataclass(frozen=True)
class PrivacySection:
    """Sample-level differential privacy of this site's training (docs/privacy.md)."""

    mode: str = "off"  # "off" or "dp-sgd"
    target_epsilon: float = 8.0  # the site's whole budget, over all the rounds it trains
    delta: float = 0.0  # 0 = automatic: a power of ten below 1/(10 x training rows)
    max_grad_norm: float = 1.0  # per-example clipping of the LoRA gradient
    rounds: int = 0  # rounds the budget must last; 0 = [rounds] last_round
    # the federation's policy (in its on-chain config hash): 0 = no requirement
    require_noise_multiplier: float = 0.0
    require_max_grad_norm: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mode == "dp-sgd"


@dataclass(frozen=True)
class NodeSection:
    """How this institution presents itself."""

    name: str = ""  # display name published with the peer record (the explorer shows it); "" = none


@dataclass(frozen=True)
class MonitoringSection:
    """Prometheus metrics and a health endpoint on a local HTTP port."""

    enabled: bool = False
    listen: str = "127.0.0.1:9464"  # host:port; keep it on a private interface


@dataclass(frozen=True)
class NodeConfig:
    """The whole medfed.toml."""

    path: Path
    state_dir: Path
    chain: ChainSection
    p2p: P2PSection
    data: DataSection
    model: ModelSection
    rounds: RoundsSection = field(default_factory=RoundsSection)
    node: NodeSection = field(default_factory=NodeSection)
    monitoring: MonitoringSection = field(default_factory=MonitoringSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q)


TEMPLATE = """\
# medfed.toml: one institution's node. Relative paths are relative to this file.
# Reference: docs/node.md. Nothing in this file is secret (the key is in wallet.json).

# Local state (SQLite store, adapters, logs of what this node did). Back it up with wallet.json.
state_dir = "medfed-state"

[node]
# Display name of your institution, published on-chain with your peer record; the explorer shows
# it beside your address. At most 64 printable characters; "" = publish none.
name = ""

[chain]
# JSON-RPC endpoint of the chain and the federation's Coordinator address (from the deployer).
rpc_url = "http://127.0.0.1:8545"
coordinator = "0x0000000000000000000000000000000000000000"
# "auto" (from the node's client version), "devnet" (local anvil) or "cypherium" (production:
# legacy tx, chain id 16166). The time unit of deadlines is always read from the chain's blocks.
profile = "auto"
# Gas price in gwei for every transaction; 0 = the profile's default.
gas_price_gwei = 0
# Block the Coordinator was deployed in: events are read from here.
start_block = 0
# Cypherium makes blocks only while transactions are pending and slows down to one block per
# ~120 s after ~3 minutes without one (until its operators restart it), which would make the next
# round's commits late. When the chain has made no block for this many seconds, the members take
# turns sending one 0-value transfer to themselves (21,000 gas). "auto" = 60 on Cypherium, off on
# anvil; 0 = off; otherwise at least 10. See docs/operations.md, "Idle is normal".
keepalive_s = "auto"

[p2p]
# Where the libp2p host listens (TCP). Open this port in the firewall for the other members.
listen = ["/ip4/0.0.0.0/tcp/4001"]
# Addresses the other members should dial, published on-chain (e.g. your public IP or DNS name).
# Empty = the addresses the host actually listens on.
announce = []
# Extra peers to dial besides those the members publish on-chain (/ip4/../tcp/../p2p/<PeerID>).
bootstrap = []
# Optional IPFS (Kubo) RPC API used to pin adapters and fetch by CID, e.g. "http://127.0.0.1:5001".
ipfs_api = ""
# Flood limits: announcements per second one member may send us (sustained, and at once); the
# excess is dropped before its signature is checked. An honest member sends a few per round.
gossip_rate = 10.0
gossip_burst = 100
# Adapter downloads served at once to one peer, and to all peers; the excess is answered "busy".
max_streams_per_peer = 1
max_streams = 64
# Firewalls (docs/operations.md "Hospital firewalls"): a site that accepts no inbound connection
# sets reachability = "private": it dials out only, keeps a reservation on relays and publishes its
# relayed addresses (/p2p-circuit) instead of its listen addresses. Relays: the members with
# relay = true that it reaches, and the `relays` listed here (e.g. a `medfed-node relay`).
# reachability = "public"
# relays = ["/ip4/203.0.113.7/tcp/4001/p2p/16Uiu2..."]
# Relay other members' traffic (members only; this site must be reachable). A relay forwards
# end-to-end encrypted bytes it cannot read. Limits: reservations held at once, MB per connection.
# relay = false
# relay_max_reservations = 32
# relay_circuit_mb = 4096
# Hole punching (DCUtR): both ends of a relayed connection dial each other at once from their
# listen ports; where the firewalls let that through, the connection becomes direct.
# hole_punch = true

[data]
# Label of this site's data in metrics and reports.
name = "medqa-us"
# Training data: a known source split ({ source, split }) or your own file
# ({ path, format }). Files: .jsonl, .json, .csv or .parquet. Formats:
#   "medqa" | "medmcqa": the MedQA / MedMCQA JSON shapes;
#   "mc": multiple choice, columns = { question = "...", options = "..." or ["a", "b", ...],
#         answer = "...", id = "..." } (answer: a letter, the option's text, or an index counted
#         from answer_base = 0 | 1); language = "en" | "zh" for the prompt;
#   "chat": a "messages" column of [{role, content}, ...] (loss on the assistant turns);
#   "prompt-completion": "prompt" and "completion" columns (strings or message lists; loss on
#         the completion). Chat data is rendered with the base model's own chat template.
# Options: part = "train" | "eval" | "all" splits one file by a hash of each row (eval_fraction),
# shard = "k/n" keeps one of n disjoint hash shards. Train and eval must be of one kind.
train = [{ source = "medqa-us", split = "dev" }]
# Held-out evaluation data: never the rows you train on (checked by id and by text). Multiple
# choice reports accuracy and the mean NLL of the correct option; chat data the held-out loss.
eval = [{ source = "medqa-us", split = "test" }]
# Questions used per round (a rotating window over the training data); 0 = all of them.
train_per_round = 64
# Held-out questions evaluated after each round; 0 = all of them.
eval_limit = 200

[model]
# "default" (SmolLM2-135M-Instruct, bundled), "tiny" (tests), a Hugging Face id or a local folder.
base = "default"
# Optional local copy of the federation's initial adapter (adapter_model.safetensors); when empty
# it is rebuilt from the seed or fetched from peers, and checked against its on-chain sha256.
initial_adapter = ""
# Base weights dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16".
# Adapters are float32 files whatever this is, so aggregation stays bit-exact on any machine.
dtype = "auto"
# QLoRA: load the base weights in 4-bit NF4 (CUDA + `pip install 'medfed[gpu]'`; fedavg only).
load_in_4bit = false

[lora]
# Must equal the federation's LoRA config (its hash is on-chain; the node refuses to start otherwise).
rank = 16
alpha = 32
dropout = 0.1
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[training]
max_steps = 20
batch_size = 4
grad_accum = 1
learning_rate = 2e-4
max_length = 256
seed = 0
# CPU threads for torch; 0 = torch's default (all cores).
threads = 0
# "cpu", "cuda", "cuda:1", "mps"; "" = cuda when torch sees a GPU, else cpu.
device = ""
# Recompute activations in the backward pass: less GPU memory for long sequences, ~30% slower.
gradient_checkpointing = false

[aggregation]
# "fedavg" or "exact"; every member must use the same strategy (verifiers recompute bit for bit).
strategy = "fedavg"
# Largest adapter accepted from a peer, in MiB (a local limit; a valid adapter of the federation's
# shape is never larger than header + tensors anyway).
max_adapter_mb = 512
# Bounds on every member's update, checked by every verifier. These and strategy are part of the
# federation's on-chain config hash: copy them from the federation, do not tune them locally.
# Largest |value| in any tensor of an update (0 = no limit); beyond it the update is left out.
max_abs = 100.0
# Largest L2 distance of an update from the round's starting adapter (0 = no absolute limit).
max_update_norm = 0.0
# Clip each update's distance to clip_factor x the round's (lower) median distance (0 = off).
clip_factor = 3.0
# Cap on the self-reported numSamples used as a weight (0 = none), and on it relative to the
# round's (lower) median count (0 = none).
max_samples = 0
samples_factor = 4.0
# Evidence of training (free-riders; the author of an update failing it forfeits the round):
# an update that moves less than min_update_ratio x the median distance of the round's other
# updates from the starting adapter is invalid (the starting adapter sent back, with or without a
# little noise; 0 = off). With min_agreement > 0 and 3 or more updates, one whose change has a
# cosine below it with the sum of the others' changes is invalid too (noise, a replayed file):
# only for sites whose updates agree (the aggregator logs every round's cosines; see
# docs/threat-model.md before turning it on: an honest site with other data can score near 0).
# A federation deployed before these rules keeps its config hash with min_update_ratio = 0.
min_update_ratio = 0.1
min_agreement = 0.0
# After this many failed rounds in a row, members train from the global adapter before the last
# one again (the way back from a poisoned global; 0 = never).
fallback_after = 2

[privacy]
# Sample-level differential privacy of this site's updates (docs/privacy.md): "off", or "dp-sgd"
# (each step trains on a Poisson sample of all the site's training rows, clips every row's LoRA
# gradient to max_grad_norm and adds Gaussian noise; [data] train_per_round is then not used).
mode = "off"
# The site's whole budget: epsilon over every round it will train. The node derives the noise from
# it and never trains past it (it then only verifies and aggregates). Spent epsilon is reported
# on-chain with each round's metrics and kept in the state dir across restarts.
target_epsilon = 8.0
# delta of (epsilon, delta)-DP; 0 = automatic, a power of ten below 1/(10 x training rows).
delta = 0.0
# Per-example clipping norm of the LoRA gradient.
max_grad_norm = 1.0
# Rounds the budget must last; 0 = [rounds] last_round (one of the two must be set for dp-sgd).
rounds = 0
# The federation's policy, part of its on-chain config hash (copy it from the federation, do not
# tune it): members must train with DP-SGD at a noise multiplier of at least
# require_noise_multiplier and clipping of at most require_max_grad_norm. 0 = no requirement.
require_noise_multiplier = 0.0
require_max_grad_norm = 0.0

[rounds]
# Open the next round when the previous one is final.
auto_open = true
# Stop opening rounds after this one (0 = never).
last_round = 0
# Seconds between looks at the chain.
poll_interval_s = 2.0
# Also open the very first round (a launcher that opens it itself sets this false).
open_first_round = true
# Give up fetching an update whose providers are all unreachable after this many seconds.
fetch_patience_s = 120.0
# Housekeeping transactions (advance, finalize, openRound) wait rank * stagger_s seconds after
# they become due, so members do not all send the same transaction.
stagger_s = 2.0
# Seconds between asks for the latest block (one cheap call); a new block with a coordinator event
# (a commit, the election, a submission, a vote, an outcome) wakes the round machine at once, so a
# node reacts to the chain within this, not within poll_interval_s. 0 = off.
watch_interval_s = 0.5

[monitoring]
# Prometheus metrics on http://<listen>/metrics and a health check on /healthz (docs/operations.md).
enabled = false
# Keep it on loopback or a management network: it is not authenticated.
listen = "127.0.0.1:9464"
"""


def write_template(out: Path) -> None:
    """Write the commented template; refuse to overwrite."""
    if out.exists():
        raise ConfigError(f"{out}: already exists; choose another --out or delete it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(TEMPLATE, encoding="utf-8")


class _Section:
    """Typed reads from one TOML table with errors naming file, section and key."""

    def __init__(self, file: str, name: str, table: Mapping[str, Any]) -> None:
        self.file, self.name, self.table = file, name, table

    def fail(self, key: str, msg: str) -> ConfigError:
        where = f"[{self.name}] {key}" if self.name else key
        return ConfigError(f"{self.file}: {where}: {msg}")

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.table) - known)
        if extra:
            raise self.fail(extra[0], f"unknown key; expected one of {', '.join(sorted(known))}")

    def str_(self, key: str, default: str | None = None) -> str:
        v = self.table.get(key, default)
        if v is None:
            raise self.fail(key, "missing; add it (see `medfed-node init` for a template)")
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, got {v!r}")
        return v

    def int_(self, key: str, default: int, lo: int = 0) -> int:
        v = self.table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if v < lo:
            raise self.fail(key, f"must be >= {lo}, got {v}")
        return v

    def float_(self, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        v = self.table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise self.fail(key, f"must be {rng}, got {v}")
        return float(v)

    def bool_(self, key: str, default: bool) -> bool:
        v = self.table.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")
        return v

    def strs(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.table.get(key, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(key, f'must be a list of strings like ["..."], got {v!r}')
        return tuple(v)

    def sub(self, key: str, required: bool = True) -> _Section:
        v = self.table.get(key)
        if v is None and not required:
            v = {}
        if not isinstance(v, dict):
            raise ConfigError(f"{self.file}: [{key}] section missing; add it (see `medfed-node init`)")
        return _Section(self.file, key, v)


def _columns(s: _Section, label: str, fmt: str) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    raw = s.table.get("columns", {})
    if raw and fmt not in TABLE_FORMATS:
        raise s.fail(f"{label}.columns", f"only for format {', '.join(TABLE_FORMATS)}")
    if not isinstance(raw, dict):
        raise s.fail(f"{label}.columns", 'must be a table like { question = "q", answer = "label" }')
    out: list[tuple[str, str | tuple[str, ...]]] = []
    for key, value in sorted(raw.items()):
        if key == "options" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out.append((key, tuple(value)))
        elif isinstance(value, str) and value:
            out.append((key, value))
        else:
            raise s.fail(
                f"{label}.columns.{key}", f"must be a column name (options: a list of names), got {value!r}"
            )
    return tuple(out)


def _data_files(sec: _Section, key: str) -> tuple[DataFile, ...]:
    raw = sec.table.get(key)
    if not isinstance(raw, list) or not raw:
        raise sec.fail(key, 'must be a non-empty list like [{ source = "medqa-us", split = "dev" }]')
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise sec.fail(f"{key}[{i}]", "must be a table like { source = ..., split = ... }")
        s = _Section(sec.file, sec.name, item)
        label = f"{key}[{i}]"
        s.unknown(
            {
                "source",
                "split",
                "path",
                "format",
                "part",
                "eval_fraction",
                "shard",
                "columns",
                "answer_base",
                "language",
            }
        )
        source, path = s.table.get("source", ""), s.table.get("path", "")
        if bool(source) == bool(path):
            raise sec.fail(label, "give either source (+ split) or path (+ format), not both or neither")
        if source and source not in SOURCES:
            raise sec.fail(f"{label}.source", f"unknown source {source!r}; one of {', '.join(SOURCES)}")
        split = s.table.get("split", "")
        if source and not isinstance(split, str):
            raise sec.fail(f"{label}.split", "must be a string")
        fmt = s.table.get("format", "")
        if path and fmt not in FORMATS:
            raise sec.fail(f"{label}.format", f"must be one of {', '.join(FORMATS)} for a file path")
        part = s.table.get("part", "all")
        if part not in PARTS:
            raise sec.fail(f"{label}.part", f"must be one of {', '.join(PARTS)}")
        frac = s.float_("eval_fraction", 0.2, 0.0, 1.0)
        if part != "all" and not 0.0 < frac < 1.0:
            raise sec.fail(f"{label}.eval_fraction", "must be strictly between 0 and 1")
        shard = s.table.get("shard", "")
        m = _SHARD.match(shard) if isinstance(shard, str) else None
        if shard and (m is None or not 1 <= int(m.group(1)) <= int(m.group(2))):
            raise sec.fail(f"{label}.shard", f'must look like "k/n" with 1 <= k <= n, got {shard!r}')
        base = s.int_("answer_base", 0)
        if base not in (0, 1):
            raise sec.fail(
                f"{label}.answer_base", f"must be 0 or 1 (where integer answers start), got {base}"
            )
        language = s.str_("language", "en")
        if language not in ("en", "zh"):
            raise sec.fail(f"{label}.language", f'must be "en" or "zh", got {language!r}')
        out.append(
            DataFile(
                str(source),
                str(split),
                str(path),
                str(fmt),
                str(part),
                frac,
                str(shard or ""),
                _columns(s, label, str(fmt)),
                base,
                language,
            )
        )
    return tuple(out)


def _keepalive_s(sec: _Section) -> float | None:
    """[chain] keepalive_s: "auto" (or absent) = None, else 0 (off) or at least 10 seconds."""
    if sec.table.get("keepalive_s", "auto") == "auto":
        return None
    v = sec.float_("keepalive_s", 0.0)
    if 0 < v < 10:
        raise sec.fail("keepalive_s", f'must be "auto", 0 (off) or at least 10 seconds, got {v}')
    return v


def _reachability(sec: _Section) -> str:
    """[p2p] reachability: "public" (others dial our listen addresses) or "private" (relays only)."""
    v = sec.str_("reachability", "public")
    if v not in ("public", "private"):
        raise sec.fail("reachability", f'must be "public" or "private" (behind a firewall), got {v!r}')
    return v


def _display_name(sec: _Section) -> str:
    name = sec.str_("name", "")
    try:
        return check_name(name)
    except ValueError as exc:
        raise sec.fail("name", f"{exc}; got {name!r}") from None


def parse_config(doc: Mapping[str, Any], path: Path) -> NodeConfig:
    """Validate a parsed medfed.toml document."""
    file = path.name
    top = _Section(file, "", doc)
    top.unknown(
        {
            "state_dir",
            "node",
            "chain",
            "p2p",
            "data",
            "model",
            "lora",
            "training",
            "aggregation",
            "rounds",
            "monitoring",
            "privacy",
        }
    )
    nd = top.sub("node", required=False)
    nd.unknown({"name"})
    node = NodeSection(_display_name(nd))
    mo = top.sub("monitoring", required=False)
    mo.unknown({"enabled", "listen"})
    listen_at = mo.str_("listen", MonitoringSection.listen)
    host, _, port = listen_at.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise mo.fail("listen", f'must be "host:port" like "127.0.0.1:9464", got {listen_at!r}')
    monitoring = MonitoringSection(mo.bool_("enabled", False), listen_at)

    c = top.sub("chain")
    c.unknown({"rpc_url", "coordinator", "profile", "gas_price_gwei", "start_block", "keepalive_s"})
    rpc = c.str_("rpc_url")
    if not rpc.startswith(("http://", "https://")):
        raise c.fail("rpc_url", f"must be an http(s):// URL, got {rpc!r}")
    coordinator = c.str_("coordinator")
    if not _ADDRESS.match(coordinator) or int(coordinator, 16) == 0:
        raise c.fail("coordinator", "must be the Coordinator's 0x address (40 hex digits) from the deployer")
    profile = c.str_("profile", "auto")
    if profile not in PROFILES:
        raise c.fail("profile", f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    chain = ChainSection(
        rpc,
        coordinator,
        profile,
        c.float_("gas_price_gwei", 0.0),
        c.int_("start_block", 0),
        _keepalive_s(c),
    )

    p = top.sub("p2p", required=False)
    p.unknown(
        {
            "listen",
            "announce",
            "bootstrap",
            "ipfs_api",
            "gossip_rate",
            "gossip_burst",
            "max_streams_per_peer",
            "max_streams",
            "relay",
            "reachability",
            "relays",
            "relay_max_reservations",
            "relay_circuit_mb",
            "hole_punch",
        }
    )
    listen = p.strs("listen", P2PSection.listen)
    if not listen:
        raise p.fail("listen", 'needs at least one address like "/ip4/0.0.0.0/tcp/4001"')
    for key, addrs in (
        ("listen", listen),
        ("announce", p.strs("announce", ())),
        ("bootstrap", p.strs("bootstrap", ())),
        ("relays", p.strs("relays", ())),
    ):
        for addr in addrs:
            if not addr.startswith("/"):
                raise p.fail(key, f"{addr!r} is not a multiaddr (like /ip4/1.2.3.4/tcp/4001)")
    ipfs = p.str_("ipfs_api", "")
    if ipfs and not ipfs.startswith(("http://", "https://")):
        raise p.fail("ipfs_api", f"must be an http(s):// URL or empty, got {ipfs!r}")
    gossip_rate = p.float_("gossip_rate", P2PSection.gossip_rate)
    if gossip_rate <= 0:
        raise p.fail("gossip_rate", "must be > 0 (announcements per second)")
    p2p = P2PSection(
        listen,
        p.strs("announce", ()),
        p.strs("bootstrap", ()),
        ipfs,
        gossip_rate,
        p.int_("gossip_burst", P2PSection.gossip_burst, lo=1),
        p.int_("max_streams_per_peer", P2PSection.max_streams_per_peer, lo=1),
        p.int_("max_streams", P2PSection.max_streams, lo=1),
        p.bool_("relay", False),
        _reachability(p),
        p.strs("relays", ()),
        p.int_("relay_max_reservations", P2PSection.relay_max_reservations, lo=1),
        p.int_("relay_circuit_mb", P2PSection.relay_circuit_mb, lo=1),
        p.bool_("hole_punch", True),
    )
    if p2p.relay and p2p.reachability == "private":
        raise p.fail("relay", 'a relay must be reachable: set reachability = "public" or relay = false')
    for addr in p2p.relays:
        if "/p2p/" not in addr:
            raise p.fail("relays", f"{addr!r} needs the relay's /p2p/<PeerID> at the end")

    d = top.sub("data")
    d.unknown({"name", "train", "eval", "train_per_round", "eval_limit"})
    data = DataSection(
        d.str_("name", "site"),
        _data_files(d, "train"),
        _data_files(d, "eval"),
        d.int_("train_per_round", 64),
        d.int_("eval_limit", 200),
    )

    m = top.sub("model", required=False)
    m.unknown({"base", "initial_adapter", "dtype", "load_in_4bit"})
    dtype = m.str_("dtype", "auto")
    if dtype not in DTYPES:
        raise m.fail("dtype", f"unknown dtype {dtype!r}; one of {', '.join(DTYPES)}")
    lo = top.sub("lora", required=False)
    lo.unknown({"rank", "alpha", "dropout", "targets"})
    t = top.sub("training", required=False)
    t.unknown(
        {
            "max_steps",
            "batch_size",
            "grad_accum",
            "learning_rate",
            "max_length",
            "seed",
            "threads",
            "device",
            "gradient_checkpointing",
        }
    )
    device = t.str_("device", "")
    if device and not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
        raise t.fail("device", f'must be "cpu", "cuda", "cuda:N", "mps" or "" (auto), got {device!r}')
    a = top.sub("aggregation", required=False)
    a.unknown(
        {
            "strategy",
            "max_adapter_mb",
            "max_abs",
            "max_update_norm",
            "clip_factor",
            "max_samples",
            "samples_factor",
            "min_update_ratio",
            "min_agreement",
            "fallback_after",
        }
    )
    strategy = a.str_("strategy", "fedavg")
    if strategy not in STRATEGIES:
        raise a.fail("strategy", f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    targets = lo.strs("targets", DEFAULT_TARGETS)
    if not targets:
        raise lo.fail("targets", "needs at least one module name")
    base = m.str_("base", "default")
    if not base:
        raise m.fail("base", 'must be "default", "tiny", a Hugging Face id or a local folder')
    if m.bool_("load_in_4bit", False) and strategy == "exact":
        raise m.fail(
            "load_in_4bit", '`exact` aggregation merges deltas into the base weights; use strategy = "fedavg"'
        )
    model = ModelSection(
        base=base,
        initial_adapter=m.str_("initial_adapter", ""),
        lora_rank=lo.int_("rank", 16, 1),
        lora_alpha=lo.int_("alpha", 32, 1),
        lora_dropout=lo.float_("dropout", 0.1, 0.0, 1.0),
        lora_targets=targets,
        max_steps=t.int_("max_steps", 20, 1),
        batch_size=t.int_("batch_size", 4, 1),
        grad_accum=t.int_("grad_accum", 1, 1),
        learning_rate=t.float_("learning_rate", 2e-4),
        max_length=t.int_("max_length", 256, 16),
        seed=t.int_("seed", 0),
        threads=t.int_("threads", 0),
        device=device,
        dtype=dtype,
        load_in_4bit=m.bool_("load_in_4bit", False),
        gradient_checkpointing=t.bool_("gradient_checkpointing", False),
        strategy=strategy,
        max_adapter_mb=a.int_("max_adapter_mb", 512, 1),
        max_abs=a.float_("max_abs", 100.0),
        max_update_norm=a.float_("max_update_norm", 0.0),
        clip_factor=a.float_("clip_factor", 3.0),
        max_samples=a.int_("max_samples", 0),
        samples_factor=a.float_("samples_factor", 4.0),
        min_update_ratio=a.float_("min_update_ratio", 0.1, 0.0, 0.999),
        min_agreement=a.float_("min_agreement", 0.0, 0.0, 0.999),
        fallback_after=a.int_("fallback_after", 2),
    )

    r = top.sub("rounds", required=False)
    r.unknown(
        {
            "auto_open",
            "last_round",
            "poll_interval_s",
            "open_first_round",
            "fetch_patience_s",
            "stagger_s",
            "watch_interval_s",
        }
    )
    poll = r.float_("poll_interval_s", 2.0)
    if poll <= 0:
        raise r.fail("poll_interval_s", "must be > 0")
    rounds = RoundsSection(
        r.bool_("auto_open", True),
        r.int_("last_round", 0),
        poll,
        r.bool_("open_first_round", True),
        r.float_("fetch_patience_s", 120.0),
        r.float_("stagger_s", 2.0),
        r.float_("watch_interval_s", 0.5),
    )
    if rounds.watch_interval_s < 0:
        raise r.fail("watch_interval_s", "must be >= 0 (0 = off)")

    privacy = _privacy(top.sub("privacy", required=False), rounds)
    state_dir = top.str_("state_dir", "medfed-state")
    cfg = NodeConfig(path, Path(), chain, p2p, data, model, rounds, node, monitoring, privacy)
    return NodeConfig(
        path, cfg.resolve(state_dir), chain, p2p, data, model, rounds, node, monitoring, privacy
    )


def _privacy(s: _Section, rounds: RoundsSection) -> PrivacySection:
    s.unknown(
        {
            "mode",
            "target_epsilon",
            "delta",
            "max_grad_norm",
            "rounds",
            "require_noise_multiplier",
            "require_max_grad_norm",
        }
    )
    mode = s.str_("mode", "off")
    if mode not in PRIVACY_MODES:
        raise s.fail("mode", f"unknown mode {mode!r}; one of {', '.join(PRIVACY_MODES)}")
    out = PrivacySection(
        mode=mode,
        target_epsilon=s.float_("target_epsilon", 8.0),
        delta=s.float_("delta", 0.0, 0.0, 1.0),
        max_grad_norm=s.float_("max_grad_norm", 1.0),
        rounds=s.int_("rounds", 0),
        require_noise_multiplier=s.float_("require_noise_multiplier", 0.0),
        require_max_grad_norm=s.float_("require_max_grad_norm", 0.0),
    )
    if out.enabled:
        if out.target_epsilon <= 0:
            raise s.fail("target_epsilon", "must be > 0 (the site's whole privacy budget)")
        if out.max_grad_norm <= 0:
            raise s.fail("max_grad_norm", "must be > 0 (the per-example clipping norm)")
        if not out.rounds and not rounds.last_round:
            raise s.fail("rounds", "set the rounds the budget must last (or [rounds] last_round) for dp-sgd")
    return out


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate medfed.toml; raise ConfigError with a one-line reason."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file; create one with `medfed-node init --out {p.name}`")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p.name}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p.name}: not UTF-8 text; save it as UTF-8") from None
    return parse_config(doc, p)
