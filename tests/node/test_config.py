"""medfed.toml: the template loads, and each kind of mistake gets a one-line error naming section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import TEMPLATE, load_config, write_template
from node.errors import ConfigError

COORD = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "medfed.toml"
    p.write_text(text)
    return p


def _valid(tmp_path: Path) -> str:
    return TEMPLATE.replace("0x0000000000000000000000000000000000000000", COORD)


def test_template_written_by_init_loads_with_defaults(tmp_path: Path) -> None:
    out = tmp_path / "medfed.toml"
    write_template(out)
    out.write_text(_valid(tmp_path))
    cfg = load_config(out)
    assert cfg.chain.coordinator == COORD
    assert cfg.chain.profile == "auto"  # node.chainkind learns the kind and time unit from the chain
    assert cfg.state_dir == tmp_path / "medfed-state"
    assert cfg.data.train[0].source == "medqa-us"
    assert cfg.model.lora_rank == 16 and cfg.model.strategy == "fedavg"
    assert cfg.rounds.watch_interval_s == 0.5 and cfg.rounds.poll_interval_s == 2.0
    # the template's flood limits are the p2p layer's defaults
    from node.daemon import flood_limits
    from p2p.limits import FloodLimits

    assert flood_limits(cfg.p2p) == FloodLimits()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "medfed.toml"
    write_template(out)
    with pytest.raises(ConfigError, match="already exists"):
        write_template(out)


def test_template_placeholder_coordinator_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[chain\] coordinator: must be the Coordinator"):
        load_config(_write(tmp_path, TEMPLATE))


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ('profile = "auto"', 'profile = "mainnet"', r"\[chain\] profile: unknown profile 'mainnet'"),
        (
            'rpc_url = "http://127.0.0.1:8545"',
            'rpc_url = "127.0.0.1:8545"',
            r"\[chain\] rpc_url: must be an http",
        ),
        ("rank = 16", 'rank = "16"', r"\[lora\] rank: must be an integer"),
        ("rank = 16", "rank = 0", r"\[lora\] rank: must be >= 1"),
        ("max_streams = 64", "max_streams = 0", r"\[p2p\] max_streams: must be >= 1"),
        ("gossip_rate = 10.0", "gossip_rate = 0", r"\[p2p\] gossip_rate: must be > 0"),
        ('strategy = "fedavg"', 'strategy = "median"', r"\[aggregation\] strategy: unknown strategy"),
        ('split = "dev" }]', 'split = "dev", shard = "3/2" }]', r"\[data\] train\[0\].shard"),
        (
            '{ source = "medqa-us", split = "test" }',
            '{ source = "pubmed", split = "x" }',
            r"eval\[0\].source",
        ),
        ("max_steps = 20", "max_stepz = 20", r"\[training\] max_stepz: unknown key"),
        (
            'listen = ["/ip4/0.0.0.0/tcp/4001"]',
            'listen = ["0.0.0.0:4001"]',
            r"\[p2p\] listen: '0.0.0.0:4001'",
        ),
        ("watch_interval_s = 0.5", "watch_interval_s = -1", r"\[rounds\] watch_interval_s: must be >= 0"),
        ('# reachability = "public"', 'reachability = "nat"', r"\[p2p\] reachability: must be \"public\""),
        (
            "# relay = false",
            'relay = true\nreachability = "private"',
            r"\[p2p\] relay: a relay must be reachable",
        ),
        (
            '# relays = ["/ip4/203.0.113.7/tcp/4001/p2p/16Uiu2..."]',
            'relays = ["/ip4/203.0.113.7/tcp/4001"]',
            r"\[p2p\] relays: .* needs the relay's /p2p/<PeerID>",
        ),
    ],
)
def test_each_mistake_names_section_and_key(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    text = _valid(tmp_path)
    assert old in text
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(_write(tmp_path, text.replace(old, new, 1)))
    assert str(err.value).startswith("medfed.toml: ")
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="medfed-node init"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[chain\nrpc_url = 1"))


def test_missing_data_section(tmp_path: Path) -> None:
    text = _valid(tmp_path)
    head, _, tail = text.partition("[data]")
    tail = tail[tail.index("[model]") :]
    with pytest.raises(ConfigError, match=r"\[data\] section missing"):
        load_config(_write(tmp_path, head + tail))


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    p = sub / "medfed.toml"
    p.write_text(_valid(tmp_path).replace('state_dir = "medfed-state"', 'state_dir = "st"'))
    cfg = load_config(p)
    assert cfg.state_dir == sub / "st"
    assert cfg.resolve("data/x.jsonl") == sub / "data" / "x.jsonl"


def test_site_sections_for_names_monitoring_and_gpus(tmp_path: Path) -> None:
    text = _valid(tmp_path).replace('name = ""', 'name = "St. Mary\'s Hospital"')
    text = text.replace("enabled = false", "enabled = true").replace('dtype = "auto"', 'dtype = "bfloat16"')
    text = text.replace('device = ""', 'device = "cuda:1"').replace(
        "gradient_checkpointing = false", "gradient_checkpointing = true"
    )
    cfg = load_config(_write(tmp_path, text))
    assert cfg.node.name == "St. Mary's Hospital"
    assert cfg.monitoring.enabled and cfg.monitoring.listen == "127.0.0.1:9464"
    assert cfg.model.dtype == "bfloat16" and cfg.model.device == "cuda:1" and cfg.model.gradient_checkpointing
    defaults = load_config(_write(tmp_path, _valid(tmp_path)))
    assert not defaults.monitoring.enabled and defaults.model.dtype == "auto" and defaults.node.name == ""


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ('name = ""', 'name = "' + "x" * 65 + '"', r"\[node\] name: a display name has at most 64"),
        ('name = ""', 'name = "bad\\u202ename"', r"\[node\] name: a display name cannot contain control"),
        ('listen = "127.0.0.1:9464"', 'listen = "9464"', r"\[monitoring\] listen: must be \"host:port\""),
        ('dtype = "auto"', 'dtype = "int8"', r"\[model\] dtype: unknown dtype 'int8'"),
        ('device = ""', 'device = "gpu"', r"\[training\] device: must be \"cpu\", \"cuda\""),
        (
            "load_in_4bit = false",
            "load_in_4bit = true",
            r"\[model\] load_in_4bit: `exact` aggregation merges deltas",
        ),
    ],
)
def test_site_section_mistakes(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    text = _valid(tmp_path).replace(old, new, 1)
    if "4bit" in new:  # 4-bit base weights cannot take `exact` merges
        text = text.replace('strategy = "fedavg"', 'strategy = "exact"')
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, text))
