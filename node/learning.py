"""The site's learner: one base model in memory, local training from a global adapter, evaluation.

Runs in worker threads (called through trio.to_thread); a lock keeps one job on the model at a time.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from node.config import NodeConfig
from node.errors import StartupError
from node.metric_report import Figures
from training.bounds import FederationRules, PrivacyPolicy, UpdateBounds, federation_config_hash
from training.data import Question, Record
from training.errors import TrainingError
from training.lora import LoraSettings
from training.privacy import DpConfig

log = logging.getLogger("medfed.learner")


def lora_settings(cfg: NodeConfig) -> LoraSettings:
    """The federation LoRA settings as configured (checked against the on-chain hash at start)."""
    m = cfg.model
    return LoraSettings(
        rank=m.lora_rank, alpha=m.lora_alpha, dropout=m.lora_dropout, target_modules=m.lora_targets
    )


def federation_rules(cfg: NodeConfig) -> FederationRules:
    """Strategy, update bounds and fallback as configured (in the on-chain config hash too)."""
    m = cfg.model
    bounds = UpdateBounds(
        max_abs=m.max_abs,
        max_update_norm=m.max_update_norm,
        clip_factor=m.clip_factor,
        max_samples=m.max_samples,
        samples_factor=m.samples_factor,
        min_update_ratio=m.min_update_ratio,
        min_agreement=m.min_agreement,
    )
    policy = PrivacyPolicy(cfg.privacy.require_noise_multiplier, cfg.privacy.require_max_grad_norm)
    return FederationRules(
        strategy=m.strategy, bounds=bounds, fallback_after=m.fallback_after, privacy=policy
    )


def federation_hash(cfg: NodeConfig) -> str:
    """The config hash this node expects on-chain: LoRA settings + federation rules."""
    return federation_config_hash(lora_settings(cfg), federation_rules(cfg))


class Learner:
    """Base model + tokenizer, loaded once; train and evaluate adapters on this site's questions."""

    def __init__(self, cfg: NodeConfig, settings: LoraSettings, scratch: Path) -> None:
        import torch

        from training.models import base_model_id, load_base_model

        if cfg.model.threads:
            torch.set_num_threads(cfg.model.threads)
        self.cfg = cfg
        self.settings = settings
        self.scratch = scratch
        self.base_model = base_model_id(cfg.model.base)
        log.info(
            "loading base model %s (device %s, dtype %s%s)",
            cfg.model.base,
            cfg.model.device or "auto",
            cfg.model.dtype,
            ", 4-bit" if cfg.model.load_in_4bit else "",
        )
        try:
            m = cfg.model
            self.model, self.tokenizer = load_base_model(m.base, m.device or None, m.dtype, m.load_in_4bit)
        except Exception as exc:
            raise StartupError(
                f"{cfg.path.name}: [model] base = {cfg.model.base!r} cannot be loaded: {exc}"
            ) from None
        self._lock = threading.Lock()
        # `exact` only: the global adapters (weights paths) merged into self.model so far, in round order,
        # and where the unmerged weights of the modules they changed are kept (to fall back from a
        # poisoned one; written anew by each process, whose model starts unmerged)
        self.merged: list[str] = []
        self._unmerged = scratch / "unmerged-base"
        shutil.rmtree(self._unmerged, ignore_errors=True)
        # called with (seconds, tokens/s) after each local training (monitoring)
        self.observer: Callable[[float, float], None] | None = None

    @property
    def exact(self) -> bool:
        """Whether rounds use `exact` aggregation (merge each global delta, train a fresh LoRA)."""
        return self.cfg.model.strategy == "exact"

    def merge_history(self, history: Sequence[str]) -> None:
        """`exact`: make the model's weights base + the deltas of ``history`` (global adapters in order).

        Merges are in place. A ``history`` that extends what was merged merges the rest; any other
        (the fallback dropped a poisoned global: node/recovery.py) puts the unmerged base weights
        back first and merges ``history`` anew, which gives the same bytes as a fresh start."""
        from training.adapter_io import read_adapter
        from training.aggregation.exact import merge_exact_delta, restore_base_weights, save_base_weights

        if list(history[: len(self.merged)]) != self.merged:
            dropped = [Path(p).parent.name[:12] for p in self.merged if p not in history]
            log.warning(
                "un-merging the global deltas: the base weights are restored and %d healthy global(s) "
                "merged again, without %s (fallback from a poisoned global adapter)",
                len(history),
                ", ".join(dropped) or "a reordered history",
            )
            restore_base_weights(self.model, self._unmerged)
            self.merged = []
        for path in history[len(self.merged) :]:
            log.info("merging global delta %s into the base weights", Path(path).parent.name[:12])
            state = read_adapter(path)
            save_base_weights(self.model, state, self._unmerged)
            merge_exact_delta(self.model, state, self.settings, in_place=True)
            self.merged.append(path)

    def train(
        self,
        start_adapter: str,
        questions: Sequence[Record],
        round: int,
        history: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        dp: DpConfig | None = None,
    ) -> tuple[str, int, Path]:
        """Train from ``start_adapter`` on ``questions``; return (sha256, samples used, adapter folder).

        With `exact`, ``start_adapter`` is the federation's initial adapter and ``history`` the global
        adapters of the previous rounds, merged into the base weights first. ``dp``: train with
        DP-SGD (node/privacy.py), on Poisson samples of ``questions``."""
        from training.train import TrainConfig, divergence_message, train_local

        m = self.cfg.model
        config = TrainConfig(
            lr=m.learning_rate,
            batch_size=m.batch_size,
            grad_accum=m.grad_accum,
            max_steps=m.max_steps,
            max_length=m.max_length,
            seed=m.seed * 1_000_003 + round,
            gradient_checkpointing=m.gradient_checkpointing,
        )
        out = self.scratch / f"train-{round}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            if self.exact:
                self.merge_history(history)
            try:
                result = train_local(
                    self.model,
                    self.tokenizer,
                    start_adapter,
                    questions,
                    self.settings,
                    config,
                    out,
                    progress=False,
                    base_model=self.base_model,
                    metadata=metadata,
                    dp=dp,
                )
            except TrainingError as exc:
                if self.exact and self.merged and str(exc).startswith("training diverged"):
                    # the start adapter is the initial one: name a poisoned merged delta instead
                    why = divergence_message(start_adapter, m.learning_rate, self.merged)
                    raise TrainingError(why) from None
                raise
        used = min(len(questions), result.steps * m.grad_accum * m.batch_size)
        if dp is not None:  # the expected number of rows sampled over the round's steps
            used = min(len(questions), dp.steps * dp.expected_batch)
        if self.observer is not None:
            self.observer(result.seconds, result.tokens_per_s)
        log.info(
            "trained %d steps, final loss %.4f, %.0f tokens/s",
            result.steps,
            result.final_loss,
            result.tokens_per_s,
        )
        return result.sha256, max(1, used), out

    def evaluate(self, adapter: str, questions: Sequence[Record], history: Sequence[str] = ()) -> Figures:
        """The global model on the held-out ``questions``: accuracy and mean NLL of the correct option
        (multiple choice), or held-out loss and perplexity (chat data).

        fedavg: base + ``adapter``. exact: base + the deltas of ``history`` (the globals before this
        one) + ``adapter``; if ``adapter`` is already merged (training of the next round came first),
        it is not applied twice."""
        from training.data import Conversation
        from training.evaluate import evaluate, evaluate_sft

        folder: Path | None = Path(adapter).parent if Path(adapter).is_file() else Path(adapter)
        with self._lock:
            if self.exact:
                if adapter in self.merged:
                    folder = None
                else:
                    self.merge_history(history)
            limit = self.cfg.model.max_length
            mcq = [q for q in questions if isinstance(q, Question)]
            if len(mcq) == len(questions):
                mc = evaluate(self.model, self.tokenizer, folder, mcq, max_length=limit)
                return Figures("mc", int(mc.n), accuracy=float(mc.accuracy), nll=float(mc.nll))
            chats = [c for c in questions if isinstance(c, Conversation)]
            sft = evaluate_sft(self.model, self.tokenizer, folder, chats, max_length=limit)
        return Figures("sft", int(sft.n), loss=float(sft.loss))
