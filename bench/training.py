"""Local training throughput: medfed's train_local() against a plain transformers + peft loop,
and its DP-SGD mode (Opacus per-example clipping + noise, Poisson batches; docs/privacy.md)
against its own non-DP mode.

Both train the default model (SmolLM2-135M-Instruct) with the same LoRA settings from the same
start adapter on the same MedQA-US questions in the same order (batch 1, accumulation 4, AdamW,
linear decay). The baseline is the textbook loop: ``peft_model(input_ids, labels=labels).loss``
with the full-vocabulary LM head at every position. Figures are real (non-pad) tokens per second of
the training loop; the best of ``--repeats`` interleaved runs is kept. The DP-SGD run takes the
same number of steps with the same expected batch (micro-batch 1, accumulation 4), noise
multiplier 1.0 and clipping 1.0; its tokens are those of the rows its Poisson batches drew.

    python bench/training.py [--quick] [--questions N] [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.adapter_io import read_adapter, write_canonical_adapter
from training.data import load_source
from training.lora import LoraSettings, initial_adapter_state
from training.models import base_model_id, load_base_model
from training.privacy import DpConfig, steps_per_round
from training.prompts import encode_example
from training.train import TrainConfig, train_local


def plain_loop(
    model: Any, start: Path, examples: list[Any], settings: LoraSettings, config: TrainConfig
) -> tuple[float, float]:
    """The reference transformers + peft loop; returns (tokens/s, final step loss)."""
    from peft import get_peft_model, set_peft_model_state_dict

    device = next(model.parameters()).device
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    groups = [order[i : i + config.grad_accum] for i in range(0, len(order), config.grad_accum)]
    torch.manual_seed(config.seed)
    peft_model = get_peft_model(model, settings.to_peft_config())
    state = {k: torch.from_numpy(v).to(device) for k, v in read_adapter(start).items()}
    set_peft_model_state_dict(peft_model, state)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / len(groups)))
        peft_model.train()
        tokens, loss_value = 0, float("nan")
        use_bf16 = device.type == "cuda"
        started = time.perf_counter()
        for group in groups:
            loss_value = 0.0
            for i in group:
                ids = torch.tensor([examples[i].input_ids], device=device)
                labels = torch.tensor([examples[i].labels], device=device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
                (out.loss / len(group)).backward()
                loss_value += float(out.loss.detach()) / len(group)
                tokens += ids.numel()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        peft_model.unload()
        model.eval()
    return tokens / seconds, loss_value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 questions, one run each")
    parser.add_argument("--questions", type=int, default=None, help="training questions (default 32)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs per side (default 2)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()
    n_questions = args.questions or (8 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 2)

    model, tok = load_base_model("default", device=args.device)
    device = next(model.parameters()).device
    settings = LoraSettings()
    config = TrainConfig(max_length=768, seed=0)
    questions = load_source("medqa-us", "dev")[:n_questions]
    examples = [encode_example(q, tok, config.max_length) for q in questions]
    print(
        f"device {device}, {n_questions} MedQA-US questions, {sum(len(e.input_ids) for e in examples)} tokens"
    )

    with tempfile.TemporaryDirectory() as tmp:
        start = Path(tmp) / "start"
        write_canonical_adapter(
            initial_adapter_state(model, settings, 0), settings, base_model_id("default"), start
        )
        warm = TrainConfig(max_steps=1, grad_accum=1, seed=0)
        train_local(model, tok, start, questions[:1], settings, warm, Path(tmp) / "warm", progress=False)
        ours, base, dp_runs = [], [], []
        dp = DpConfig(
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch=config.batch_size * config.grad_accum,
            steps=steps_per_round(len(questions), config.batch_size * config.grad_accum),
            seed=0,
        )
        for r in range(repeats):
            tps, loss = plain_loop(model, start, examples, settings, config)
            base.append(tps)
            print(f"run {r}: plain transformers+peft {tps:8.1f} tok/s (final loss {loss:.4f})")
            res = train_local(
                model, tok, start, questions, settings, config, Path(tmp) / f"out{r}", progress=False
            )
            ours.append(res.tokens_per_s)
            print(
                f"run {r}: medfed train_local      {res.tokens_per_s:8.1f} tok/s "
                f"(final loss {res.final_loss:.4f})"
            )
            res = train_local(
                model, tok, start, questions, settings, config, Path(tmp) / f"dp{r}", progress=False, dp=dp
            )
            dp_runs.append(res.tokens_per_s)
            print(
                f"run {r}: medfed DP-SGD            {res.tokens_per_s:8.1f} tok/s "
                f"(final loss {res.final_loss:.4f}, {res.steps} steps)"
            )
    best_ours, best_base, best_dp = max(ours), max(base), max(dp_runs)
    print(
        f"RESULT training_tokens_per_s {best_ours:.1f} tok/s "
        f"baseline={best_base:.1f} ratio={best_ours / best_base:.2f}"
    )
    print(
        f"RESULT dp_training_tokens_per_s {best_dp:.1f} tok/s "
        f"baseline={best_ours:.1f} ratio={best_dp / best_ours:.2f}"
    )


if __name__ == "__main__":
    main()
