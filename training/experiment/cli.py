"""``medfed-experiment``: reproduce the non-IID study (base / single-site LoRA / FedAvg / exact).

Examples::

    medfed-experiment                      # the defaults (SmolLM2-135M, ~1 h on 2 CPU cores)
    medfed-experiment --quick --out /tmp/q # tiny random model, a handful of rows, < 1 min
    medfed-experiment --calibrate          # measure per-question costs, project the wall time
    medfed-experiment --quick --backend ray --out /tmp/r   # the same on Ray actors (same bytes)
    medfed-experiment --backend ray --ray-address auto --sites 12   # join a cluster, 12 institutions
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.experiment.backends import BACKENDS, Backend
from training.experiment.config import (
    DEFAULT_EVAL_SIZE,
    DEFAULT_LR,
    DEFAULT_TRAIN_SIZES,
    METHODS,
    METRICS,
    TARGETS,
    ExperimentConfig,
    quick_config,
)
from training.experiment.errors import ExperimentError

log = logging.getLogger("medfed.experiment")


def _sizes(text: str) -> tuple[int, int, int]:
    try:
        parts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or CN,EN,IN integers, e.g. 40,16,48") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give one number or three (CN,EN,IN)")
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medfed-experiment",
        description="Reproduce the federated-LoRA non-IID study (base, single-site LoRA, FedAvg, exact) "
        "on MedQA-Mainland, MedQA-US and MedMCQA.",
    )
    p.add_argument("--out", help="output dir (default results/experiment-<UTC timestamp>)")
    p.add_argument(
        "--quick", action="store_true", help="tiny random model and a handful of rows (pipeline check)"
    )
    p.add_argument("--model", help="'default' (SmolLM2-135M gguf), 'tiny', a HF id or a local dir")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--seed", type=int, help="data subsets, LoRA init and shuffles (default 0)")
    p.add_argument(
        "--train-sizes",
        type=_sizes,
        help=f"training questions per site, N or CN,EN,IN (default {DEFAULT_TRAIN_SIZES})",
    )
    p.add_argument("--eval-size", type=int, help=f"test questions per test set (default {DEFAULT_EVAL_SIZE})")
    p.add_argument("--rounds", type=int, help="communication rounds (default 3)")
    p.add_argument("--local-epochs", type=int, help="local epochs per round (default 1)")
    p.add_argument("--lr", type=float, help=f"peak learning rate, linear decay (default {DEFAULT_LR:g})")
    p.add_argument("--batch-size", type=int, help="micro-batch size (default 1)")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 4)")
    p.add_argument("--rank", type=int, help="LoRA rank (default 16)")
    p.add_argument("--alpha", type=int, help="LoRA alpha (default 32)")
    p.add_argument("--dropout", type=float, help="LoRA dropout (default 0.1)")
    p.add_argument("--max-length", type=int, help="max prompt+answer tokens (default 512)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the 95%% intervals (default 1000)")
    p.add_argument("--methods", help=f"comma list from {','.join(METHODS)} (default all)")
    p.add_argument(
        "--target",
        choices=TARGETS,
        help="what local training learns: the answer letter (default) or the correct option's text "
        "given the question alone (moves the answer-text NLL)",
    )
    p.add_argument(
        "--metrics",
        help=f"comma list from {','.join(METRICS)} (default both): letter accuracy, answer-text NLL",
    )
    p.add_argument("--data-dir", help="dataset folder (default $MEDFED_DATA_DIR or ../shared/data)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--keep-adapters", action="store_true", help="keep every round's adapters under OUT/adapters"
    )
    p.add_argument(
        "--calibrate", action="store_true", help="measure per-question costs, print the projection, exit"
    )
    p.add_argument(
        "--sites",
        type=int,
        help="simulated institutions (default 3, one per dataset; more split each dataset into shards)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: every task in this process; ray: site-rounds and evaluations on Ray actors",
    )
    p.add_argument(
        "--ray-address",
        help="join this Ray cluster (e.g. ray://head:10001 or head:6379; default $RAY_ADDRESS, "
        "else a local Ray instance sized to this machine)",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        help="Ray actors, each holding the model (default: one per GPU, else one per --ray-cpus-per-worker "
        "CPUs, at most the number of sites)",
    )
    p.add_argument(
        "--ray-cpus-per-worker", type=float, help="CPUs each Ray actor requests (default --threads or 1)"
    )
    p.add_argument(
        "--dp-epsilon",
        type=float,
        help="train every site with DP-SGD within this epsilon over all its rounds (docs/privacy.md)",
    )
    p.add_argument("--dp-delta", type=float, help="DP delta (default: below 1/(a site's training rows))")
    p.add_argument("--dp-max-grad-norm", type=float, help="DP-SGD per-example clipping norm (default 1.0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return p


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The run's config: ``--quick`` or the defaults, overridden by every option given."""
    over: dict[str, Any] = {}
    for key in (
        "model", "device", "seed", "train_sizes", "eval_size", "rounds", "local_epochs", "lr",
        "batch_size", "grad_accum", "rank", "alpha", "dropout", "max_length", "bootstrap", "data_dir",
        "sites", "target", "dp_epsilon", "dp_delta", "dp_max_grad_norm",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            over[key] = value
    if args.methods:
        over["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.metrics:
        over["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    return quick_config(**over) if args.quick else ExperimentConfig(**over)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 2 bad input or failure)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    command = ["medfed-experiment", *(sys.argv[1:] if argv is None else list(argv))]
    try:
        return _run(args, command)
    except (TrainingError, OSError) as exc:
        if args.debug:
            raise
        print(f"medfed-experiment: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, command: list[str]) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)

    if args.calibrate:
        from training.experiment.plan import measure, passes, project

        costs = measure(cfg)
        train_rounds, evals = passes(cfg)
        total = project(cfg, costs)
        print(f"per training question (s): {costs.train_s}")
        print(f"per test question (s):     {costs.eval_s}")
        print(f"this config: {train_rounds} site-rounds of training, {evals} evaluations of all test sets")
        print(f"projected wall time: {total / 60:.1f} min")
        return 0

    from training.experiment.plot import plot_nll, plot_results
    from training.experiment.report import write_reports
    from training.experiment.runner import Runner, RunState

    backend = _backend(args, cfg)  # bad backend options fail before anything is written
    out = Path(args.out or f"results/experiment-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExperimentError(f"cannot create output dir {out}: {exc}; pass a writable --out") from exc
    log.info("output dir %s; config %s", out, cfg.to_dict())

    def on_update(state: RunState) -> None:
        write_reports(state, out, command)
        if any(e.scores is not None for e in state.evaluations):
            plot_results(state, out / "results.png")
        if any(e.nll_scores is not None for e in state.evaluations):
            plot_nll(state, out / "results_nll.png")

    runner = Runner(cfg, out, on_update=on_update, progress=not args.no_progress, backend=backend)
    try:
        state = runner.run()
    except BaseException:
        runner.state.status = "failed"
        if runner.state.evaluations:
            on_update(runner.state)
        raise
    finally:
        if not args.keep_adapters:
            shutil.rmtree(out / "adapters", ignore_errors=True)
    log.info(
        "done in %.0f s: %s",
        state.timing.get("wall_s", 0.0),
        ", ".join(str(out / f) for f in ("results.md", "results.json", "results.png")),
    )
    return 0


def _backend(args: argparse.Namespace, cfg: ExperimentConfig) -> Backend:
    """The backend ``--backend`` names (Ray is imported only when asked for)."""
    if args.backend == "local":
        if args.ray_address or args.ray_workers or args.ray_cpus_per_worker:
            raise ExperimentError("--ray-address/--ray-workers/--ray-cpus-per-worker need --backend ray")
        from training.experiment.backends.local import LocalBackend

        return LocalBackend(cfg.model, cfg.device, progress=not args.no_progress)
    if args.ray_workers is not None and args.ray_workers < 1:
        raise ExperimentError(f"--ray-workers {args.ray_workers}: give 1 or more")
    if args.ray_cpus_per_worker is not None and args.ray_cpus_per_worker <= 0:
        raise ExperimentError(f"--ray-cpus-per-worker {args.ray_cpus_per_worker}: give a positive number")
    from training.experiment.backends.ray_backend import RayBackend, _import_ray

    _import_ray()  # fail early, with the install hint, before any data is loaded
    return RayBackend(
        cfg.model,
        cfg.device,
        address=args.ray_address,
        workers=args.ray_workers,
        cpus_per_worker=args.ray_cpus_per_worker,
        threads=args.threads,
        max_parallel=max(cfg.sites, 3),
    )


if __name__ == "__main__":
    raise SystemExit(main())
