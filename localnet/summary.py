"""D/summary.json of a local federation (accuracies and rewards per round, from the chain) and its table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from localnet.processes import Federation

SUMMARY_FILE = "summary.json"


def _fair(acc: Mapping[str, float]) -> dict[str, float]:
    vals = list(acc.values())
    if not vals:
        return {"macro_acc": 0.0, "min_acc": 0.0, "hmean": 0.0}
    hmean = 0.0 if min(vals) <= 0 else len(vals) / sum(1.0 / v for v in vals)
    return {"macro_acc": sum(vals) / len(vals), "min_acc": min(vals), "hmean": hmean}


def summarize(fed: Federation) -> dict[str, Any]:
    """summary.json: base accuracy from the nodes' own evaluations, rounds from chain events."""
    from chain import types as ev
    from chain.events import EventReader

    names = {a.lower(): s.name for a, s in zip(fed.devnet.addresses, fed.sites, strict=True)}
    from node.metric_report import decode_report

    base_acc, base_loss = {}, {}
    for i, site in enumerate(fed.sites):
        m = fed.metrics(i).get("0")
        if m is not None and m.get("metric") == "sft":
            base_loss[site.name] = float(m["loss"])
        elif m is not None:
            base_acc[site.name] = float(m["accuracy"])
    rounds: dict[int, dict[str, Any]] = {}
    submissions: dict[tuple[int, int], str] = {}
    client = fed.client()
    opened_at: dict[int, float] = {}
    for e in EventReader(client).read(fed.devnet.deploy_block):
        if isinstance(e, ev.RoundOpened):
            opened_at[e.round] = _block_time(client, e.block_number)
        elif isinstance(e, ev.AggregateSubmitted):
            submissions[(e.round, e.attempt)] = e.aggregator
        elif isinstance(e, ev.RoundFinalized):
            rounds[e.round] = {
                "round": e.round,
                "attempts": e.attempt + 1,
                "aggregator": submissions.get((e.round, e.attempt)),
                "global_sha256": bytes(e.global_sha256).hex(),
                "accuracy": {},
                "loss": {},
                "rewards": {},
                "wall_s": _block_time(client, e.block_number) - opened_at.get(e.round, math.nan),
            }
        elif isinstance(e, ev.RoundFailed):
            rounds[e.round] = {
                "round": e.round,
                "attempts": e.attempts,
                "aggregator": None,
                "global_sha256": None,
                "accuracy": {},
                "loss": {},
                "rewards": {},
                "wall_s": _block_time(client, e.block_number) - opened_at.get(e.round, math.nan),
            }
        elif isinstance(e, ev.RewardPaid) and e.round in rounds:
            r = rounds[e.round]["rewards"]
            r[e.to] = r.get(e.to, 0) + int(e.amount)
        elif isinstance(e, ev.MetricsReported) and e.round in rounds:
            who = names.get(e.member.lower(), e.member)
            what = decode_report(bytes(e.eval_set_hash), e.accuracy_ppm)
            if what["kind"] == "sft":  # a chat site's held-out loss (node.metric_report)
                rounds[e.round]["loss"][who] = what["value"]
            else:
                rounds[e.round]["accuracy"][who] = e.accuracy_ppm / 1_000_000
    out_rounds = []
    for r in sorted(rounds):
        item = rounds[r]
        out_rounds.append(
            {
                "round": item["round"],
                "attempts": item["attempts"],
                "aggregator": item["aggregator"],
                "global_sha256": item["global_sha256"],
                "accuracy": dict(sorted(item["accuracy"].items())),
                **_fair(item["accuracy"]),
                **({"loss": dict(sorted(item["loss"].items()))} if item["loss"] else {}),
                "rewards": dict(sorted(item["rewards"].items())),
                "wall_s": round(item["wall_s"], 1),
                "slowest_train_s": round(slowest_training(fed, r), 1),
            }
        )
    base: dict[str, Any] = {"accuracy": dict(sorted(base_acc.items())), **_fair(base_acc)}
    if base_loss:
        base["loss"] = dict(sorted(base_loss.items()))
    return {"base": base, "rounds": out_rounds}


def _block_time(client: Any, number: int) -> float:
    """A block's timestamp in unix seconds (Cypherium's are in milliseconds)."""
    return float(client.chain_to_seconds(int(client.w3.eth.get_block(number)["timestamp"])))


def slowest_training(fed: Federation, round: int) -> float:
    """The longest local training of ``round`` among the sites (each node's own measurement)."""
    from node.state import StateStore

    longest = 0.0
    for i, address in enumerate(fed.devnet.addresses):
        store = StateStore(fed.state_dirs[i], fed.devnet.coordinator, address)
        try:
            longest = max(longest, store.timings(round).get("train", 0.0))
        finally:
            store.close()
    return longest


def print_table(summary: Mapping[str, Any]) -> None:
    """The per-institution accuracy table, one row per round."""
    names = sorted(summary["base"]["accuracy"]) or sorted(
        {k for r in summary["rounds"] for k in r["accuracy"]}
    )

    def row(label: str, r: Mapping[str, Any]) -> str:
        cells = "".join(f"{r['accuracy'].get(n, float('nan')):>17.3f}" for n in names)
        return f"{label:<8}{cells}{r['macro_acc']:>8.3f}{r['min_acc']:>8.3f}{r['hmean']:>8.3f}"

    if names:  # multiple-choice sites (chat sites report a loss, below)
        head = (
            f"{'round':<8}" + "".join(f"{n[:16]:>17}" for n in names) + f"{'Macro':>8}{'Min':>8}{'H-mean':>8}"
        )
        print(head)
        print("-" * len(head))
        print(row("base", summary["base"]))
        for r in summary["rounds"]:
            label = f"r{r['round']}" + ("" if r["global_sha256"] else " FAIL")
            print(row(label, r))
    loss_names = sorted(summary["base"].get("loss", {}))
    if loss_names:  # chat (SFT) sites: held-out loss, lower is better
        print(("\n" if names else "") + "held-out loss (nats per reply token)")
        print(f"{'round':<8}" + "".join(f"{n[:16]:>17}" for n in loss_names))
        for label, r in [("base", summary["base"])] + [(f"r{x['round']}", x) for x in summary["rounds"]]:
            print(
                f"{label:<8}"
                + "".join(f"{r.get('loss', {}).get(n, float('nan')):>17.4f}" for n in loss_names)
            )
    print()
    for r in summary["rounds"]:
        print(
            f"round {r['round']}: {r['wall_s']:.1f} s from opening to its outcome on-chain; "
            f"slowest site trained {r['slowest_train_s']:.1f} s"
        )


def write_summary(fed: Federation) -> dict[str, Any]:
    """Collect, write D/summary.json and return it."""
    summary = summarize(fed)
    tmp = fed.dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(fed.dir / SUMMARY_FILE)
    return summary
