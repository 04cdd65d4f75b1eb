"""Run every method of the study: base, single-site LoRA, federated fedavg and exact.

Federated rounds are simulated: each site trains locally with :func:`training.train.train_local`
from the round's starting adapter, then :func:`training.aggregation.aggregate` combines the
updates (weights = training-set sizes) on this driver. Local training and evaluation are jobs
(:mod:`training.experiment.tasks`) that a backend runs in this process or on Ray actors.
Round 1 starts every method from the same seeded adapter with the same seeds, so its local
updates are computed once and shared by all methods.

Stage order puts the headline comparison first (base, fedavg, single) and writes a partial
report after every evaluation, so an interrupted run still leaves usable, labelled numbers.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.adapter_io import read_adapter, write_canonical_adapter
from training.aggregation import AggregationInput, aggregate
from training.experiment.backends import Backend
from training.experiment.backends.local import LocalBackend
from training.experiment.config import ExperimentConfig, deviations
from training.experiment.dataset import (
    Institution,
    SiteData,
    assert_no_leakage,
    institution_order,
    select,
    train_seed,
)
from training.experiment.metrics import Scores, score
from training.experiment.nll import NllScores, nll_scores
from training.experiment.tasks import (
    AdapterFiles,
    EvalJob,
    Merge,
    TrainJob,
    read_adapter_files,
    write_adapter_files,
)
from training.lora import LoraSettings
from training.models import base_model_id
from training.privacy import DpConfig, default_delta, noise_for_budget, sample_rate, steps_per_round
from training.train import TrainConfig

log = logging.getLogger("medfed.experiment")


@dataclass
class Evaluation:
    """One scored model: which method, which site it was trained on (single-site), which round."""

    label: str
    method: str
    site: str | None
    round: int | None
    correct: dict[str, np.ndarray]
    scores: Scores | None  # None when the run does not measure accuracy
    seconds: float
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    nll: dict[str, np.ndarray] = field(default_factory=dict)  # answer-text NLL per test question
    nll_scores: NllScores | None = None


@dataclass
class LocalUpdate:
    """One site's local training in one round."""

    site: str
    round: int
    method: str
    adapter: Path
    sha256: str
    num_samples: int
    steps: int
    mean_loss: float
    final_loss: float
    seconds: float
    tokens_per_s: float
    worker: str = ""


@dataclass
class RunState:
    """Everything gathered so far (the report is rendered from it at any point)."""

    config: ExperimentConfig
    sites: list[SiteData] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    updates: list[LocalUpdate] = field(default_factory=list)
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    leakage: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    status: str = "running"
    stages_done: int = 0
    stages_total: int = 0


def machine_info(device: str) -> dict[str, Any]:
    """Where the run happened (goes into the report)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Runner:
    """Executes the experiment; ``on_update`` is called with the state after every stage.

    Local training and evaluation go through ``backend`` (in-process by default, or Ray actors);
    data selection, aggregation, the ``exact`` merge chain and the report stay on this driver.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | os.PathLike[str],
        on_update: Callable[[RunState], None] | None = None,
        progress: bool = True,
        backend: Backend | None = None,
    ) -> None:
        self.cfg = config
        self.out = Path(out_dir)
        self.work = self.out / "adapters"
        self.on_update = on_update or (lambda state: None)
        self.progress = progress
        self.settings = LoraSettings(rank=config.rank, alpha=config.alpha, dropout=config.dropout)
        self.state = RunState(config=config)
        self.backend: Backend = backend or LocalBackend(config.model, config.device, progress=progress)
        self.model_name = base_model_id(config.model)

    # ------------------------------------------------------------------ plan

    def _stages(self) -> int:
        m, r = self.cfg.methods, self.cfg.rounds
        n = 1 if "base" in m else 0
        n += 1 if any(x in m for x in ("single", "fedavg", "exact")) else 0  # shared round 1
        n += r if "fedavg" in m else 0
        n += r if "exact" in m else 0
        n += r if "single" in m else 0  # rounds 2..R, then one evaluation stage
        return n

    def _tick(self, what: str) -> None:
        s = self.state
        s.stages_done += 1
        elapsed = time.time() - s.started
        eta = elapsed / s.stages_done * (s.stages_total - s.stages_done)
        log.info(
            "[%d/%d] %s done (elapsed %.0f s, rough ETA %.0f s)",
            s.stages_done,
            s.stages_total,
            what,
            elapsed,
            eta,
        )
        self.on_update(s)

    # ------------------------------------------------------------------ pieces

    @property
    def institutions(self) -> list[Institution]:
        return [inst for s in self.state.sites for inst in s.institutions]

    def _ordered_institutions(self) -> list[Institution]:
        """Institutions in training order (CN, EN, IN, CN-2, EN-2, ...): index = seed offset."""
        return institution_order(self.state.sites)

    def _train_config(self, site_index: int, round_no: int) -> TrainConfig:
        # Same seed for a (site, round) in every method: round 1 is then shared exactly.
        return TrainConfig(
            lr=self.cfg.lr,
            batch_size=self.cfg.batch_size,
            grad_accum=self.cfg.grad_accum,
            epochs=self.cfg.local_epochs,
            max_length=self.cfg.max_length,
            seed=train_seed(self.cfg.seed, round_no, site_index, len(self._ordered_institutions())),
            device=self.cfg.device,
            target=self.cfg.target,
        )

    def _dp_config(self, inst: Institution, site_index: int, round_no: int) -> DpConfig | None:
        """DP-SGD settings of a site-round: the noise that keeps all ``rounds`` rounds of the site
        within ``dp_epsilon`` (the site's whole budget); the same seed as its non-DP training."""
        c = self.cfg
        if c.dp_epsilon is None:
            return None
        rows = len(inst.train)
        batch = c.batch_size * c.grad_accum
        steps = steps_per_round(rows, batch, c.local_epochs)
        delta = c.dp_delta if c.dp_delta is not None else default_delta(rows)
        sigma = noise_for_budget(c.dp_epsilon, delta, sample_rate(batch, rows), steps * c.rounds)
        seed = train_seed(c.seed, round_no, site_index, len(self._ordered_institutions()))
        return DpConfig(sigma, c.dp_max_grad_norm, batch, steps, seed=seed)

    def _train(
        self, start: Path | dict[str, Path], method: str, round_no: int, merges: Sequence[Merge] = ()
    ) -> list[LocalUpdate]:
        """Train every site one local round from ``start`` (one adapter, or one per site).

        ``merges``: the ``exact`` aggregates merged into the base weights before training.
        """
        insts = self._ordered_institutions()
        shared: AdapterFiles | None = read_adapter_files(start) if isinstance(start, Path) else None
        chain = tuple(merges)  # one object for all jobs: a backend may ship it once
        jobs = []
        for i, inst in enumerate(insts):
            log.info(
                "%s round %d: site %s trains on %d questions", method, round_no, inst.name, len(inst.train)
            )
            files = shared if shared is not None else read_adapter_files(start[inst.name])  # type: ignore[index]
            jobs.append(
                TrainJob(
                    site=inst.name,
                    round=round_no,
                    method=method,
                    start=files,
                    questions=inst.train,
                    settings=self.settings,
                    config=self._train_config(i, round_no),
                    dp=self._dp_config(inst, i, round_no),
                    base_model=self.model_name,
                    merges=chain,
                )
            )
        t = time.perf_counter()
        results = self.backend.train(jobs)
        self.state.timing["train_wall_s"] = self.state.timing.get("train_wall_s", 0.0) + (
            time.perf_counter() - t
        )
        out: list[LocalUpdate] = []
        for inst, res in zip(insts, results, strict=True):
            dest = write_adapter_files(res.files, self.work / method / f"round{round_no}" / inst.name)
            upd = LocalUpdate(
                site=inst.name,
                round=round_no,
                method=method,
                adapter=dest,
                sha256=res.sha256,
                num_samples=res.num_samples,
                steps=res.steps,
                mean_loss=res.mean_loss,
                final_loss=res.final_loss,
                seconds=res.seconds,
                tokens_per_s=res.tokens_per_s,
                worker=res.worker,
            )
            log.info(
                "  site %s: %d steps, mean loss %.4f, %.0f s, %.0f tok/s%s",
                inst.name,
                upd.steps,
                upd.mean_loss,
                upd.seconds,
                upd.tokens_per_s,
                f" (worker {res.worker})" if res.worker != "local" else "",
            )
            self.state.updates.append(upd)
            self.state.timing["train_s"] = self.state.timing.get("train_s", 0.0) + res.seconds
            out.append(upd)
        return out

    def _aggregate(self, strategy: str, updates: Sequence[LocalUpdate], dest: Path) -> dict[str, np.ndarray]:
        inputs = [
            AggregationInput(
                member=f"site-{u.site.lower()}", num_samples=u.num_samples, state=read_adapter(u.adapter)
            )
            for u in updates
        ]
        agg = aggregate(strategy, inputs)
        write_canonical_adapter(agg, self.settings, self.model_name, dest)
        return agg

    def _evaluate(
        self,
        adapter: Path | None,
        label: str,
        method: str,
        site: str | None,
        round_no: int | None,
        merges: Sequence[Merge] = (),
    ) -> Evaluation:
        return self._evaluate_many([(adapter, label, method, site, round_no, merges)])[0]

    def _evaluate_many(
        self,
        specs: Sequence[tuple[Path | None, str, str, str | None, int | None, Sequence[Merge]]],
    ) -> list[Evaluation]:
        """Score several models on every test set: one evaluation pass per (model, test set)."""
        tests = self.state.sites
        jobs = []
        for adapter, label, _, _, _, merges in specs:
            files = read_adapter_files(adapter) if adapter is not None else None
            chain = tuple(merges)  # one object per model: a backend may ship it once
            jobs += [
                EvalJob(label, s.name, s.test, files, self.cfg.max_length, chain, self.cfg.metrics)
                for s in tests
            ]
        t = time.perf_counter()
        results = self.backend.evaluate(jobs)
        self.state.timing["eval_wall_s"] = self.state.timing.get("eval_wall_s", 0.0) + (
            time.perf_counter() - t
        )
        out: list[Evaluation] = []
        for k, (_, label, method, site, round_no, _) in enumerate(specs):
            part = results[k * len(tests) : (k + 1) * len(tests)]
            seconds = sum(r.seconds for r in part)
            ev = Evaluation(label, method, site, round_no, {}, None, seconds)
            if "accuracy" in self.cfg.metrics:
                ev.correct = {s.name: r.correct for s, r in zip(tests, part, strict=True)}
                ev.predictions = {s.name: r.predictions for s, r in zip(tests, part, strict=True)}
                ev.scores = score(ev.correct, n_boot=self.cfg.bootstrap, seed=self.cfg.seed)
                log.info(
                    "%s: %s | Macro %.1f Min %.1f H-mean %.1f",
                    label,
                    " ".join(f"{k} {v.value:.1f}" for k, v in ev.scores.accuracy.items()),
                    ev.scores.macro.value,
                    ev.scores.min.value,
                    ev.scores.hmean.value,
                )
            if "nll" in self.cfg.metrics:
                ev.nll = {s.name: r.nll for s, r in zip(tests, part, strict=True)}
                ev.nll_scores = nll_scores(ev.nll, n_boot=self.cfg.bootstrap, seed=self.cfg.seed)
                log.info(
                    "%s: answer NLL %s | worst %.4f mean %.4f",
                    label,
                    " ".join(f"{k} {v.value:.4f}" for k, v in ev.nll_scores.per_site.items()),
                    ev.nll_scores.worst.value,
                    ev.nll_scores.mean.value,
                )
            self.state.evaluations.append(ev)
            self.state.timing["eval_s"] = self.state.timing.get("eval_s", 0.0) + seconds
            log.info("%s evaluated in %.0f s", label, seconds)
            out.append(ev)
        return out

    def _round_record(
        self, method: str, round_no: int, ev: Evaluation, updates: Sequence[LocalUpdate], sha: str
    ) -> None:
        self.state.rounds.setdefault(method, []).append(
            {
                "round": round_no,
                "global_sha256": sha,
                "scores": ev.scores.to_dict() if ev.scores is not None else None,
                "nll": ev.nll_scores.to_dict() if ev.nll_scores is not None else None,
                "local": {
                    u.site: {
                        "steps": u.steps,
                        "mean_loss": round(u.mean_loss, 6),
                        "final_loss": round(u.final_loss, 6),
                        "seconds": round(u.seconds, 2),
                        "sha256": u.sha256,
                    }
                    for u in updates
                },
            }
        )

    # ------------------------------------------------------------------ the run

    def run(self) -> RunState:
        """Run all configured methods; returns the final state (also passed to ``on_update``)."""
        try:
            return self._run()
        finally:
            if self.state.status != "complete":
                self._backend_stats()
            self.backend.close()

    def _backend_stats(self) -> None:
        """Task counts and overheads of the backend, into the report's timing (``<backend>_*``)."""
        self.state.timing.update({f"{self.backend.name}_{k}": v for k, v in self.backend.stats().items()})

    def _run(self) -> RunState:
        cfg, s = self.cfg, self.state
        t0 = time.perf_counter()
        if self.out.exists() and any(self.out.iterdir()):
            log.warning("output dir %s is not empty; files there will be overwritten", self.out)
        self.work.mkdir(parents=True, exist_ok=True)
        s.sites = select(cfg)
        s.leakage = {
            **assert_no_leakage(s.sites),
            "checked": "no test question shares an id or a question stem with a trained question",
            "excluded_test_rows_with_stem_in_a_training_split": {x.name: x.excluded_overlap for x in s.sites},
        }
        s.deviations = deviations(cfg, {x.name: len(x.test) for x in s.sites})
        s.stages_total = self._stages()
        log.info(
            "data: %s",
            "; ".join(
                f"{x.name} train {len(x.train)}/{x.train_pool} test {len(x.test)}/{x.test_pool}"
                for x in s.sites
            ),
        )
        if len(self.institutions) != len(s.sites):
            log.info(
                "%d institutions: %s",
                len(self.institutions),
                ", ".join(f"{i.name} ({len(i.train)})" for i in self._ordered_institutions()),
            )
        t = time.perf_counter()
        facts = self.backend.start()
        device = str(facts["device"])
        s.machine = machine_info(device)
        s.backend = {"name": self.backend.name, **{k: v for k, v in facts.items() if k != "device"}}
        s.timing["model_load_s"] = time.perf_counter() - t
        log.info("model %s loaded on %s in %.1f s", cfg.model, device, s.timing["model_load_s"])

        init_dir = write_adapter_files(
            self.backend.initial_adapter(self.settings, cfg.seed, self.model_name), self.work / "initial"
        )

        if "base" in cfg.methods:
            self._evaluate(None, "Base model", "base", None, None)
            self._tick("base model evaluation")

        methods = cfg.methods
        if not any(m in methods for m in ("single", "fedavg", "exact")):
            return self._finish(t0)
        round1 = self._train(init_dir, "round1", 1)
        self._tick("round 1 local training (shared by all methods)")

        if "fedavg" in methods:
            self._run_fedavg(round1)
        if "single" in methods:
            self._run_single(round1)
        if "exact" in methods:
            self._run_exact(round1, init_dir)
        return self._finish(t0)

    def _run_fedavg(self, round1: list[LocalUpdate]) -> None:
        updates = round1
        for r in range(1, self.cfg.rounds + 1):
            if r > 1:
                updates = self._train(self.work / "fedavg" / f"global{r - 1}", "fedavg", r)
            dest = self.work / "fedavg" / f"global{r}"
            self._aggregate("fedavg", updates, dest)
            ev = self._evaluate(dest, f"FedAvg round {r}", "fedavg", None, r)
            self._round_record("fedavg", r, ev, updates, _sha(dest))
            self._tick(f"fedavg round {r}")

    def _run_single(self, round1: list[LocalUpdate]) -> None:
        names = [i.name for i in self._ordered_institutions()]
        for u in round1:
            shutil.copytree(u.adapter, self.work / "single" / u.site, dirs_exist_ok=True)
        for r in range(2, self.cfg.rounds + 1):
            own = {name: self.work / "single" / name for name in names}
            ups = self._train(own, "single", r)
            for u in ups:
                shutil.copytree(u.adapter, self.work / "single" / u.site, dirs_exist_ok=True)
            self._tick(f"single-site round {r}")
        self._evaluate_many(
            [
                (self.work / "single" / name, f"LoRA (site {name} only)", "single", name, self.cfg.rounds, ())
                for name in names
            ]
        )
        self._tick("single-site evaluation")

    def _run_exact(self, round1: list[LocalUpdate], init_dir: Path) -> None:
        # Sites merge each round's exact delta into their base weights, then train a fresh LoRA.
        merges: list[Merge] = []
        updates = round1
        for r in range(1, self.cfg.rounds + 1):
            if r > 1:
                updates = self._train(init_dir, "exact", r, merges)
            dest = self.work / "exact" / f"global{r}"
            agg = self._aggregate("exact", updates, dest)
            merges.append(Merge(f"exact/global{r}:{_sha(dest)}", agg, self.settings))
            ev = self._evaluate(None, f"Exact round {r}", "exact", None, r, merges)
            self._round_record("exact", r, ev, updates, _sha(dest))
            self._tick(f"exact round {r}")

    def _finish(self, t0: float) -> RunState:
        self.state.timing["wall_s"] = time.perf_counter() - t0
        self._backend_stats()
        self.state.status = "complete"
        self.on_update(self.state)
        return self.state


def _sha(adapter_dir: Path) -> str:
    from training.adapter_io import WEIGHTS_NAME, sha256_file

    return sha256_file(adapter_dir / WEIGHTS_NAME)
