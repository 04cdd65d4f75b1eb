"""The Ray backend: site-rounds and evaluation passes run on Ray actors that each hold the model.

Each actor (:class:`SiteWorker`) loads the base model once when it starts and then serves any
number of training and evaluation tasks; a batch of jobs (the sites of a round, or the test sets
of an evaluation) is spread over the actors, one job per free actor, so the sites of a round train
in parallel. A job carries only its own site's questions, so each site's data goes only to the
actor that trains it. Aggregation stays on the driver (the runner), deterministic.

Actors request one GPU each when the cluster has GPUs (and ``--device`` is not ``cpu``), CPUs
otherwise. A killed actor is restarted (``max_restarts``) and its task retried
(``max_task_retries``); the task functions are pure given the job, so the retry gives the same bytes.

``MEDFED_RAY_TEST_HOOK=DIR`` (tests only) makes every training task write ``DIR/train-<pid>-...``
when it starts and wait while ``DIR/hold`` exists, so a test can kill the actor mid-task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.experiment.errors import ExperimentError
from training.experiment.tasks import (
    AdapterFiles,
    EvalJob,
    EvalOutcome,
    ModelHolder,
    TrainJob,
    TrainOutcome,
    initial_adapter,
    run_eval,
    run_train,
)
from training.lora import LoraSettings

log = logging.getLogger("medfed.experiment")

TEST_HOOK_ENV = "MEDFED_RAY_TEST_HOOK"
MAX_RESTARTS = 3  # per actor: a worker may die this many times (node lost, OOM kill, ...)
MAX_TASK_RETRIES = 3  # per task, on top of the first attempt


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExperimentError(
            "--backend ray needs Ray: pip install 'medfed[ray]' (or pip install ray), or use --backend local"
        ) from None
    return ray


class SiteWorker:
    """A Ray actor: one process holding the base model, serving training and evaluation tasks."""

    def __init__(self, model: str, device: str | None, threads: int | None, test_hook: str | None) -> None:
        import warnings

        import torch

        # peft calls transformers' renamed checkpointing helper (also silenced in pytest's config).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if threads:
            torch.set_num_threads(threads)
        self.test_hook = test_hook
        self.holder = ModelHolder(model, device)
        started = time.perf_counter()
        self.holder.load()  # once per worker process (again only if Ray restarts the actor)
        self.load_s = time.perf_counter() - started
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def info(self) -> dict[str, Any]:
        import torch

        return {
            "worker": self.name,
            "pid": os.getpid(),
            "model_loads": self.holder.loads,
            "device": self.holder.device_name(),
            "model_load_s": self.load_s,
            "torch_threads": torch.get_num_threads(),
        }

    def initial_adapter(self, settings: LoraSettings, seed: int, base_model: str) -> AdapterFiles:
        return initial_adapter(self.holder, settings, seed, base_model)

    def train(self, job: TrainJob, shared: dict[str, Any]) -> tuple[TrainOutcome, float]:
        """One site-round; ``shared`` holds the job's fields that travel once per batch (see _split)."""
        started = time.perf_counter()
        job = dataclasses.replace(job, **shared)
        if self.test_hook:
            self._test_hold(job)
        return run_train(self.holder, job, worker=self.name), time.perf_counter() - started

    def evaluate(self, job: EvalJob, shared: dict[str, Any]) -> tuple[EvalOutcome, float]:
        """One evaluation pass; ``shared`` as for :meth:`train`."""
        started = time.perf_counter()
        job = dataclasses.replace(job, **shared)
        return run_eval(self.holder, job, worker=self.name), time.perf_counter() - started

    def _test_hold(self, job: TrainJob) -> None:
        hook = Path(str(self.test_hook))
        (hook / f"train-{os.getpid()}-{job.method}-r{job.round}-{job.site}").write_text(self.name)
        deadline = time.monotonic() + 120.0
        while (hook / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class RayBackend:
    """Runs the task functions on Ray actors; joins ``address`` or starts a local Ray instance."""

    name = "ray"

    def __init__(
        self,
        model: str,
        device: str | None,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float | None = None,
        threads: int | None = None,
        max_parallel: int = 3,
    ) -> None:
        self.model = model
        self.device = device
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker or float(threads or 1)
        self.threads = threads
        self.max_parallel = max(1, max_parallel)
        self.actors: list[Any] = []
        self._started_ray = False
        self._ray: Any = None
        self._tasks = 0
        self._task_s = 0.0
        self._driver_s = 0.0
        self._infos: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def start(self) -> dict[str, Any]:
        ray = self._ray = _import_ray()
        t = time.perf_counter()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                log.info("joining the Ray cluster at %s", address)
                ray.init(address=address, log_to_driver=True)
            else:
                log.info("starting a local Ray instance (%d CPUs)", os.cpu_count() or 1)
                # A private instance reports nothing home unless the user opted in.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(include_dashboard=False, log_to_driver=True)
            self._started_ray = True
        ray_init_s = time.perf_counter() - t
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 1))
        use_gpu = gpus > 0 and not (self.device or "").startswith("cpu")
        fit = gpus if use_gpu else max(1, int(cpus // self.cpus_per_worker))
        n = self.workers or max(1, min(fit, self.max_parallel))
        if n > fit:  # Ray would wait forever for resources that are not there
            self.close()
            need = f"{n} GPUs" if use_gpu else f"{n} x {self.cpus_per_worker:g} CPUs"
            have = f"{gpus} GPUs" if use_gpu else f"{cpus:g} CPUs"
            raise ExperimentError(
                f"--ray-workers {n} needs {need}; the Ray cluster has {have}: lower --ray-workers "
                "or --ray-cpus-per-worker, or add machines"
            )
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_worker,
            "num_gpus": 1 if use_gpu else 0,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": MAX_TASK_RETRIES,
        }
        log.info(
            "Ray cluster: %g CPUs, %d GPUs; starting %d workers (%s each), each loads model %s once",
            cpus,
            gpus,
            n,
            "1 GPU" if use_gpu else f"{self.cpus_per_worker:g} CPU",
            self.model,
        )
        actor_cls = ray.remote(SiteWorker).options(**options)
        hook = os.environ.get(TEST_HOOK_ENV) or None
        t = time.perf_counter()
        self.actors = [actor_cls.remote(self.model, self.device, self.threads, hook) for _ in range(n)]
        try:
            self._infos = ray.get([a.info.remote() for a in self.actors])
        except Exception as exc:
            self.close()
            raise ExperimentError(f"Ray workers failed to start: {exc}") from exc
        for info in self._infos:
            log.info(
                "  worker %s on %s, model loaded in %.1f s, %d torch threads",
                info["worker"],
                info["device"],
                info["model_load_s"],
                info["torch_threads"],
            )
        return {
            "device": self._infos[0]["device"],
            "model_load_s": time.perf_counter() - t,
            "ray_init_s": ray_init_s,
            "workers": n,
            "ray": {
                "version": ray.__version__,
                "address": self.address or ("RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "local"),
                "cluster_cpus": cpus,
                "cluster_gpus": gpus,
                "workers": [{k: v for k, v in i.items() if k != "pid"} for i in self._infos],
            },
        }

    def initial_adapter(self, settings: LoraSettings, seed: int, base_model: str) -> AdapterFiles:
        files: AdapterFiles = self._ray.get(self.actors[0].initial_adapter.remote(settings, seed, base_model))
        return files

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        return self._map("train", jobs)

    def evaluate(self, jobs: Sequence[EvalJob]) -> list[EvalOutcome]:
        return self._map("evaluate", jobs)

    def _split(self, job: Any, refs: dict[tuple[int, ...], Any]) -> tuple[Any, Any]:
        """(job without its shared fields, one object-store ref to them).

        The start adapter of a round and the ``exact`` merge chain are the same objects in every
        job of a batch: they are put into the object store once and reach each machine once,
        instead of travelling with every task. A site's questions stay in its own job.
        """
        names = [f for f in ("start", "adapter", "merges") if hasattr(job, f)]
        shared = {f: getattr(job, f) for f in names}
        key = tuple(id(v) for v in shared.values())  # the same objects in every job of a batch
        if key not in refs:
            refs[key] = self._ray.put(shared)
        blank: dict[str, Any] = {f: ({} if f == "start" else None if f == "adapter" else ()) for f in names}
        return dataclasses.replace(job, **blank), refs[key]

    def _map(self, method: str, jobs: Sequence[Any]) -> list[Any]:
        """Run ``jobs`` on the actors, one in flight per actor; results in job order."""
        ray = self._ray
        results: list[Any] = [None] * len(jobs)
        free = list(self.actors)
        pending: dict[Any, tuple[int, Any, float]] = {}
        queue = list(enumerate(jobs))
        refs: dict[tuple[int, ...], Any] = {}  # shared fields put once per batch (kept alive until it ends)
        while queue or pending:
            while queue and free:
                i, job = queue.pop(0)
                actor = free.pop(0)
                light, shared = self._split(job, refs)
                pending[getattr(actor, method).remote(light, shared)] = (i, actor, time.perf_counter())
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i, actor, submitted = pending.pop(ref)
                try:
                    outcome, task_s = ray.get(ref)
                except Exception as exc:  # retries exhausted, or a task error
                    raise ExperimentError(
                        f"Ray {method} task {i + 1}/{len(jobs)} failed after {MAX_TASK_RETRIES} retries: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                    ) from exc
                self._tasks += 1
                self._task_s += task_s
                self._driver_s += time.perf_counter() - submitted
                results[i] = outcome
                self._seen.add(outcome.worker)
                free.append(actor)
        return results

    def stats(self) -> dict[str, float]:
        out = {
            "tasks": float(self._tasks),
            "task_s": self._task_s,
            "task_roundtrip_s": self._driver_s,
            "worker_processes": float(len(self._seen)),
        }
        if self._tasks:
            out["overhead_per_task_ms"] = 1000 * (self._driver_s - self._task_s) / self._tasks
        if self.actors:  # model loads of the live actor processes (a restarted actor counts anew)
            with contextlib.suppress(Exception):
                infos = self._ray.get([a.info.remote() for a in self.actors], timeout=60)
                out["model_loads"] = float(sum(i["model_loads"] for i in infos))
        return out

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)
        self.actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
