"""medfed.toml for one local institution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localnet.errors import FederationError
from localnet.sites import Site
from localnet.sizing import Sizing


def _toml_value(v: Any) -> str:
    """A TOML inline value (strings are JSON-escaped, which TOML basic strings accept)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def _toml_list(items: tuple[dict[str, Any], ...]) -> str:
    return _toml_value(list(items))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_config_text(
    devnet: Any,
    site: Site,
    sizing: Sizing,
    model: str,
    initial: Path,
    last_round: int,
    threads: int,
    strategy: str = "fedavg",
    rules: Any = None,
    monitoring_port: int = 0,
    keepalive_s: float | None = None,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    reachability: str = "public",
    relay: bool = False,
    open_first_round: bool = False,
) -> str:
    """medfed.toml for one local institution (``rules``: a ``FederationRules`` written out in
    full into [aggregation]; None = the defaults; monitoring on 127.0.0.1:``monitoring_port`` if given;
    ``keepalive_s``: [chain] keepalive_s, None = "auto"; ``listen``, ``reachability``, ``relay``: [p2p],
    for sites in network namespaces, issue 19; ``open_first_round``: the node opens round 1 itself
    (sites started by hand; `up` opens it once every node is ready))."""
    extra = ""
    if rules is not None:
        strategy = rules.strategy
        extra = "".join(f"{k} = {v!r}\n" for k, v in sorted(rules.bounds.canonical().items()))
        extra += f"fallback_after = {rules.fallback_after}\n"
    return f"""\
# medfed.toml written by `medfed-localnet` for institution {site.name}
state_dir = "state"

[node]
name = {_toml_value(site.name)}

[monitoring]
enabled = {_toml_value(bool(monitoring_port))}
listen = "127.0.0.1:{monitoring_port or 9464}"

[chain]
rpc_url = "{devnet.site_rpc_url}"
coordinator = "{devnet.coordinator}"
profile = "{devnet.profile.name}"
start_block = {devnet.deploy_block}
keepalive_s = {'"auto"' if keepalive_s is None else keepalive_s}

[p2p]
listen = ["{listen}"]
reachability = "{reachability}"
relay = {_toml_value(relay)}

[data]
name = {_toml_value(site.name)}
train = {_toml_list(site.train)}
eval = {_toml_list(site.eval)}
train_per_round = {sizing.train_per_round}
eval_limit = {sizing.eval_limit}

[model]
base = "{model}"
initial_adapter = "{initial}"

[lora]
rank = {sizing.lora_rank}
alpha = {sizing.lora_alpha}

[training]
max_steps = {sizing.max_steps}
batch_size = {sizing.batch_size}
grad_accum = {sizing.grad_accum}
max_length = {sizing.max_length}
threads = {threads}

[aggregation]
strategy = "{strategy}"
{extra}
[rounds]
auto_open = true
open_first_round = {_toml_value(open_first_round)}
last_round = {last_round}
poll_interval_s = {sizing.poll_interval_s}
fetch_patience_s = {sizing.fetch_patience_s}
stagger_s = {sizing.stagger_s}
watch_interval_s = {sizing.watch_interval_s}
"""


def dp_sections(nodes: int, rounds: int, epsilon: float | None, sites: int | None) -> dict[int, str]:
    """node -> a [privacy] section training with DP-SGD within ``epsilon`` over ``rounds`` (issue 20)."""
    if epsilon is None:
        return {}
    if epsilon <= 0:
        raise FederationError("--dp-epsilon must be > 0")
    section = f'\n[privacy]\nmode = "dp-sgd"\ntarget_epsilon = {epsilon!r}\nrounds = {rounds}\n'
    return {i: section for i in range(nodes if sites is None else min(sites, nodes))}
