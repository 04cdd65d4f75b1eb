"""Aggregation throughput: medfed's deterministic aggregate() against a plain numpy float64 weighted sum.

Adapters the size of Qwen3-1.7B rank 16 on all seven projections (28 layers; 17.4M float32
parameters each), 3 and 10 members. The baseline is the textbook
``sum(w_i * x_i.astype(float64)).astype(float32)`` per tensor on the same arrays in the same run.
Figures are input parameters aggregated per second (members x adapter parameters / seconds).

    python bench/aggregation.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.aggregation import AggregationInput, aggregate

# Qwen3-1.7B: hidden 2048, 16 query heads and 8 KV heads of dim 128, MLP 6144, 28 layers.
HIDDEN, KV, MLP, LAYERS, RANK = 2048, 1024, 6144, 28, 16
PROJ = {
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (KV, HIDDEN),
    "self_attn.v_proj": (KV, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (MLP, HIDDEN),
    "mlp.up_proj": (MLP, HIDDEN),
    "mlp.down_proj": (HIDDEN, MLP),
}


def make_adapter(rng: np.random.Generator, layers: int) -> dict[str, np.ndarray]:
    state = {}
    for layer in range(layers):
        for proj, (out_f, in_f) in PROJ.items():
            base = f"base_model.model.model.layers.{layer}.{proj}"
            state[f"{base}.lora_A.weight"] = rng.standard_normal((RANK, in_f), dtype=np.float32)
            state[f"{base}.lora_B.weight"] = rng.standard_normal((out_f, RANK), dtype=np.float32)
    return state


def baseline(inputs: list[AggregationInput]) -> dict[str, np.ndarray]:
    """Plain numpy: float64 weighted sum per tensor, cast to float32."""
    total = sum(i.num_samples for i in inputs)
    weights = [i.num_samples / total for i in inputs]
    out = {}
    for key in inputs[0].state:
        acc = np.zeros(inputs[0].state[key].shape, dtype=np.float64)
        for w, item in zip(weights, inputs, strict=True):
            acc = acc + w * item.state[key].astype(np.float64)
        out[key] = acc.astype(np.float32)
    return out


def rate(n: int, params: int, seconds: float) -> float:
    return n * params / seconds / 1e6


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="4 layers instead of 28 (2.5M parameters per adapter)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per case (best is kept)")
    args = parser.parse_args()
    layers = 4 if args.quick else LAYERS
    rng = np.random.default_rng(0)
    pool = [make_adapter(rng, layers) for _ in range(10)]
    params = sum(v.size for v in pool[0].values())
    print(
        f"adapter: {layers} layers, rank {RANK}, {params / 1e6:.2f}M parameters "
        f"({params * 4 / 2**20:.0f} MiB fp32)"
    )
    result = None
    for n in (3, 10):
        inputs = [AggregationInput(f"0x{i:040x}", 100 + 37 * i, pool[i]) for i in range(n)]
        ours_out = aggregate("fedavg", inputs)
        base_out = baseline(inputs)
        worst = max(float(np.abs(ours_out[k] - base_out[k]).max()) for k in ours_out)
        t_base = best_time(partial(baseline, inputs), args.repeats)
        t_fedavg = best_time(partial(aggregate, "fedavg", inputs), args.repeats)
        t_exact = best_time(partial(aggregate, "exact", inputs), args.repeats)
        print(
            f"n={n:2d}: baseline {rate(n, params, t_base):7.1f} Mparam/s ({t_base:.3f}s) | "
            f"fedavg {rate(n, params, t_fedavg):7.1f} Mparam/s ({t_fedavg:.3f}s, "
            f"ratio {t_base / t_fedavg:.2f}) | exact {rate(n, params, t_exact):7.1f} Mparam/s "
            f"({t_exact:.3f}s) | max |fedavg - baseline| {worst:.2e}"
        )
        result = (rate(n, params, t_fedavg), rate(n, params, t_base), t_base / t_fedavg)
    assert result is not None
    print(
        f"RESULT aggregation_fedavg_10 {result[0]:.1f} Mparam/s "
        f"baseline={result[1]:.1f} ratio={result[2]:.2f}"
    )


if __name__ == "__main__":
    main()
