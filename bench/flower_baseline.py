"""Flower's side of `bench/round.py`: the same rounds in Flower's simulation (run_simulation, Ray
backend), with clients that "train" by sleeping medfed's measured training times.

    python bench/flower_baseline.py SPEC.json

SPEC: {"clients": n, "param_bytes": B, "sleeps": [[s_round1_client0, ...], ...]}. Every client
receives the global array (float32, B bytes), sleeps its time for the round, returns an array of
the same size; the server runs FedAvg over all n clients each round (no evaluation). The wall time
of each round is stamped from the start of `configure_train` to the end of `aggregate_train`. An
unmeasured warm-up round (no sleep) comes first, so that Ray's lazily started actors are up, as
medfed's nodes are before its first round.
Prints one JSON line: {"api": ..., "walls": [...]}. Needs only flwr[simulation] and numpy (run it
with the bench venv's Python); it imports nothing of medfed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import flwr
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

SPEC_ENV = "MEDFED_FLOWER_SPEC"


def _spec() -> dict[str, Any]:
    with open(os.environ[SPEC_ENV]) as fh:
        return json.load(fh)  # type: ignore[no-any-return]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Sleep this site's measured training time for the round; return an update of the same size."""
    spec = _spec()
    rnd = int(msg.content["config"]["server-round"])
    pid = int(context.node_config["partition-id"])
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    time.sleep(spec["sleeps"][rnd - 1][pid])
    update = [a + np.float32(0.001) for a in arrays]
    reply = RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord({"num-examples": 16})})
    return Message(content=reply, reply_to=msg)


class TimedFedAvg(FedAvg):
    """FedAvg that stamps each round's start (configure) and end (aggregated)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.started: dict[int, float] = {}
        self.walls: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.started[server_round] = time.monotonic()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        out = super().aggregate_train(server_round, replies)
        self.walls[server_round] = time.monotonic() - self.started[server_round]
        return out


server_app = ServerApp()
RESULT: dict[str, Any] = {}


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    spec = _spec()
    n = int(spec["clients"])
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=n,
        min_evaluate_nodes=0,
        min_available_nodes=n,
    )
    initial = ArrayRecord([np.zeros(max(1, int(spec["param_bytes"]) // 4), dtype=np.float32)])
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=len(spec["sleeps"]))
    RESULT["walls"] = [strategy.walls[r] for r in sorted(strategy.walls)]
    with open(os.environ[SPEC_ENV] + ".out", "w") as fh:
        json.dump(RESULT, fh)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: flower_baseline.py SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = json.load(fh)
    n = int(spec["clients"])
    # one unmeasured warm-up round first (no sleep): Ray starts its client actors lazily, on the first
    # message, while medfed's nodes are up and connected before its first round opens
    spec["sleeps"] = [[0.0] * n, *spec["sleeps"]]
    os.environ[SPEC_ENV] = os.path.abspath(argv[0]) + ".run"
    with open(os.environ[SPEC_ENV], "w") as fh:
        json.dump(spec, fh)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    # every client sleeps at once, as medfed's sites train at once: one (tiny) CPU share each
    backend = {"init_args": {"num_cpus": n, "include_dashboard": False}, "client_resources": {"num_cpus": 1}}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n, backend_config=backend)
    with open(os.environ[SPEC_ENV] + ".out") as fh:
        walls = json.load(fh)["walls"]
    os.unlink(os.environ[SPEC_ENV] + ".out")
    os.unlink(os.environ[SPEC_ENV])
    api = f"flwr {flwr.__version__} run_simulation (Ray backend), message-API FedAvg, 1 warm-up round"
    print(json.dumps({"api": api, "walls": walls[1:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
