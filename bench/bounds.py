"""Cost of the update bounds: median norm clipping + sample caps before FedAvg, against plain FedAvg.

Adapters shaped like SmolLM2-135M's rank-16 LoRA on all seven projections (30 layers, ~4.9M
float32 parameters), 3 members, one of them 100x further from the reference than the others
(so it is clipped). The baseline is `aggregate("fedavg", ...)` on the same inputs; the figure is
the seconds `aggregate("fedavg", bounded_inputs(...))` takes (norms are exact `math.fsum` sums,
so the cost is dominated by them; a round's training takes minutes).

    python bench/bounds.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.aggregation import AggregationInput, aggregate
from training.bounds import UpdateBounds, bounded_inputs

# SmolLM2-135M: hidden 576, 9 heads / 3 KV heads of dim 64, MLP 1536, 30 layers.
HIDDEN, KV, MLP, LAYERS, RANK = 576, 192, 1536, 30, 16
PROJ = {
    "q_proj": (HIDDEN, HIDDEN),
    "k_proj": (KV, HIDDEN),
    "v_proj": (KV, HIDDEN),
    "o_proj": (HIDDEN, HIDDEN),
    "gate_proj": (MLP, HIDDEN),
    "up_proj": (MLP, HIDDEN),
    "down_proj": (HIDDEN, MLP),
}


def _inputs(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], list[AggregationInput]]:
    ref: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        for name, (out_f, in_f) in PROJ.items():
            base = f"base_model.model.model.layers.{layer}.{name}"
            ref[base + ".lora_A.weight"] = rng.standard_normal((RANK, in_f)).astype(np.float32) * 0.04
            ref[base + ".lora_B.weight"] = np.zeros((out_f, RANK), np.float32)
    inputs = []
    for k, scale in enumerate((0.001, 0.001, 0.1)):
        state = {n: (v + rng.standard_normal(v.shape).astype(np.float32) * scale) for n, v in ref.items()}
        inputs.append(AggregationInput(f"0x{k:040x}", 16, state))
    return ref, inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ref, inputs = _inputs(np.random.default_rng(0))
    params = sum(v.size for v in ref.values())
    bounded, plain = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        aggregate("fedavg", bounded_inputs(inputs, ref, UpdateBounds()))
        bounded.append(time.perf_counter() - t)
        t = time.perf_counter()
        aggregate("fedavg", inputs)
        plain.append(time.perf_counter() - t)
    b, p = min(bounded), min(plain)
    print(f"{len(inputs)} members x {params} parameters: bounded {b:.3f} s, plain fedavg {p:.3f} s")
    print(f"RESULT bounded_fedavg {b:.3f} s baseline={p:.3f} ratio={b / p:.2f}")


if __name__ == "__main__":
    main()
