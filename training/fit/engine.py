"""The one training engine: objective, optimizer, schedule, step count and epoch loop.

Every trainer is a thin wrapper over it: the single-process window loop
(:func:`training.fit.loop.train_window`), the local trainer (:func:`training.fit.local.fit_local`),
the Ray Train worker (:mod:`training.fit.worker`: start-up, DDP, checkpoint/report and resume as
:class:`StepHooks`), the Tune ``loop`` trial (:mod:`tuning.trial`) and the throughput
benchmark's plain arm. Batches are drawn per epoch from ``np.random.default_rng([seed, epoch])``,
so a run resumed at step ``k`` replays the same batch order and skips the first ``k`` steps.

This module does not import Ray: a worker adds Ray through its hooks. A config's
``epoch_schedule`` (a PBT sweep's, see :mod:`training.epoch_schedule`) is applied at each
epoch's start, here, so every trainer replays it alike.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig
from training.epoch_schedule import apply_epoch
from training.features.examples import WindowExamples, iter_batches, steps_per_epoch
from training.fit.objective import TrainingObjective
from training.fit.optim_state import restore_optimizer_state
from training.fit.result import OptimizerState
from training.model import MultiTaskBatch, ShopStreamModel, copy_model

logger = logging.getLogger(__name__)

# Steps left out of the steady-state throughput: the first ones fill the text-encoder cache
# and (under DDP) build gradient buckets, so they are several times slower than the rest.
STEADY_WARMUP_STEPS = 5
# Metrics key prefix of each epoch's peak learning rate (EngineRun.metrics).
PEAK_LR_KEY = "peak_lr_epoch_"
# Loss rows averaged in a progress report.
LOSS_TAIL = 20


@dataclass(frozen=True)
class WorkerSettings:
    """The continual-learning settings a trainer needs (a slice of IncrementalConfig)."""

    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    adv_epsilon: float = 0.0
    adv_steps: int = 1
    checkpoint_every: int = 0
    inject_failure_at_step: int | None = None
    inject_failure_marker: str | None = None
    timing_warmup_steps: int = STEADY_WARMUP_STEPS
    examples_memory_mib: int = 1024


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def seed_torch(cfg: TrainConfig, rank: int = 0) -> None:
    """Dropout is reproducible per (seed, rank)."""
    torch.manual_seed(cfg.seed * 1000 + rank)


def use_determinism(cfg: TrainConfig, device: torch.device) -> bool:
    """Switch torch's deterministic kernels on or off for this process (``cfg.deterministic``;
    'auto': on for CPU training); returns whether they are on.

    Without them the CPU backward of advanced indexing (``index_put_`` with accumulate) adds
    its rows in thread order: two runs of one update differed by up to 3e-5 in 11-28 of 124
    tensors (mostly the user and item embeddings), enough to move near-tied cells of a long
    report. The deterministic CPU kernel sorts instead, and was no slower
    (``benchmarks/determinism.py``)."""
    on = cfg.deterministic == "on" or (cfg.deterministic == "auto" and device.type == "cpu")
    if on and device.type == "cuda":
        # cuBLAS reads this when its handle is created; without it, CUDA matmuls are not
        # deterministic and torch warns on each.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic kernel warns instead of failing the update.
    torch.use_deterministic_algorithms(on, warn_only=True)
    return on


def build_optimizer(model: ShopStreamModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the fine-tuned encoder layers on their own (smaller) learning rate."""
    encoder = [p for p in model.text.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": rest, "lr": cfg.lr, "name": "heads"}]
    if encoder:
        groups.append({"params": encoder, "lr": cfg.encoder_lr, "name": "encoder"})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``: warm-up, then decay."""
    warmup = int(cfg.warmup_frac * total)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig,
                    start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule over ``total_steps``, already at step ``start`` (a resumed run); the
    learning rates come from ``optimizer`` as built now (a resumed trial keeps its own)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step + start, total_steps, cfg))


def build_objective(model: ShopStreamModel, teacher: ShopStreamModel | None, cfg: TrainConfig,
                    settings: WorkerSettings) -> TrainingObjective:
    """Tasks + distillation from ``teacher`` (none without one) + adversarial term."""
    return TrainingObjective(
        model, cfg.task_weights, cfg.fraud_pos_weight, teacher=teacher,
        distill_weight=settings.distill_weight if teacher is not None else 0.0,
        distill_temperature=settings.distill_temperature, adv_epsilon=settings.adv_epsilon,
        adv_steps=settings.adv_steps)


def global_steps(examples: WindowExamples, world_size: int, batch_size: int) -> int:
    """Steps per epoch, the same on every rank (from the largest shard's size)."""
    return rows_steps(len(examples.rec), len(examples.fraud), world_size, batch_size)


def rows_steps(rec_rows: int, fraud_rows: int, world_size: int, batch_size: int) -> int:
    """:func:`global_steps` from the row counts alone (a rank that holds only its shard)."""
    return steps_per_epoch(math.ceil(rec_rows / world_size),
                           math.ceil(fraud_rows / world_size), batch_size)


def total_steps(examples: WindowExamples, world_size: int, cfg: TrainConfig
                ) -> tuple[int, int]:
    """(steps per epoch on every rank, steps of the run: all epochs, capped by max_steps)."""
    return run_steps(global_steps(examples, world_size, cfg.batch_size), cfg)


def run_steps(steps: int, cfg: TrainConfig) -> tuple[int, int]:
    """(``steps`` per epoch, steps of the run: all epochs, capped by max_steps)."""
    total = steps * cfg.epochs
    return steps, total if cfg.max_steps is None else min(cfg.max_steps, total)


def share_text_cache(model: ShopStreamModel, teacher: ShopStreamModel | None,
                     entries: dict[str, torch.Tensor]) -> None:
    """Student and teacher share the frozen text outputs (their frozen weights are the
    same), seeded with the ones the driver computed."""
    model.text.use_shared_cache()
    model.text.import_cache(entries)
    if teacher is not None:
        teacher.text.use_shared_cache()


def batch_size_of(batch: MultiTaskBatch) -> int:
    rec = len(batch.rec.target_idx) if batch.rec is not None else 0
    fraud = len(batch.fraud.label) if batch.fraud is not None else 0
    return rec + fraud


def train_step(objective: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None,
               batch: MultiTaskBatch, cfg: TrainConfig) -> dict[str, float]:
    """One optimizer step on one multi-task batch.

    ``objective`` is a :class:`TrainingObjective` (tasks + distillation + adversarial
    terms in one forward), possibly DDP-wrapped by Ray Train.
    """
    objective.train()
    optimizer.zero_grad(set_to_none=True)
    losses = objective(batch)
    total = losses["loss"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite training loss {float(total.detach())}: "
                                 "lower lr/encoder_lr or check the input features")
    total.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {key: float(value.detach()) for key, value in losses.items()}


class StepClock:
    """A rank's loop timing: overall, the first step on its own, and the steady state.

    ``samples_per_s`` covers the whole loop; ``steady_samples_per_s`` only the steps after
    the first ``warmup`` (all of them when the run has no more).
    """

    def __init__(self, warmup: int = STEADY_WARMUP_STEPS) -> None:
        self.warmup = warmup
        self.began = self.steady_began = time.perf_counter()
        self.steps = self.samples = self.steady_samples = 0
        self.first_step_s = 0.0

    def tick(self, samples: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.samples += samples
        if self.steps == 1:
            self.first_step_s = now - self.began
        if self.steps <= self.warmup:
            self.steady_began = now
        else:
            self.steady_samples += samples

    def metrics(self) -> dict[str, float]:
        now = time.perf_counter()
        seconds = now - self.began
        overall = self.samples / seconds if seconds > 0 else 0.0
        steady_s = now - self.steady_began
        steady = self.steady_samples / steady_s if self.steady_samples and steady_s > 0 \
            else overall
        return {"samples_per_s": overall, "steady_samples_per_s": steady,
                "steady_steps": max(0, self.steps - self.warmup),
                "first_step_s": self.first_step_s, "train_s": seconds,
                "torch_threads": torch.get_num_threads()}


@dataclass
class EngineRun:
    """Where a run stands: ``step`` counts the steps done, skipped ones (resume) included;
    ``losses`` holds one row per step trained in this call."""

    total: int
    start: int
    clock: StepClock
    step: int = 0
    epoch: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)
    # Epoch -> the peak learning rate (heads) it started with: what a schedule set.
    peak_lrs: dict[int, float] = field(default_factory=dict)

    @property
    def trained(self) -> int:
        return len(self.losses)

    def mean_losses(self, last: int = LOSS_TAIL) -> dict[str, float]:
        tail = self.losses[-last:]
        return {key: float(np.mean([row[key] for row in tail])) for key in tail[-1]} \
            if tail else {}

    def metrics(self) -> dict[str, float]:
        """Progress as a worker reports it: step, epoch, timing and recent mean losses."""
        return {"step": self.step, "epoch": self.epoch, **self.clock.metrics(),
                **self.mean_losses(),
                **{f"{PEAK_LR_KEY}{e}": lr for e, lr in self.peak_lrs.items()}}


class StepHooks:
    """What a trainer adds around the engine's steps; every hook does nothing here."""

    def before_step(self, step: int, batch: MultiTaskBatch) -> None:
        """Called before step ``step`` (0-based) trains ``batch``."""

    def after_step(self, run: EngineRun) -> None:
        """Called after each trained step; ``run.step`` steps are done."""

    def after_epoch(self, run: EngineRun, losses: list[dict[str, float]]) -> None:
        """Called after each epoch that trained steps, with that epoch's loss rows."""


def run_epochs(objective: nn.Module, model: ShopStreamModel, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None, shard: WindowExamples,
               cfg: TrainConfig, steps: int, total: int, *, device: torch.device,
               start: int = 0, hooks: StepHooks | None = None,
               clock: StepClock | None = None) -> EngineRun:
    """Steps ``start``..``total``-1 of the run over ``shard``, ``steps`` per epoch.

    ``model`` is the unwrapped model (its item count sizes negative sampling); ``objective``
    wraps it (possibly DDP). ``scheduler`` must already stand at step ``start``.
    """
    hooks = hooks or StepHooks()
    run = EngineRun(total, start, clock or StepClock())
    for epoch in range(cfg.epochs):
        first = epoch * steps
        if first >= total:
            break
        if first + steps <= start:
            run.step = first + steps  # a whole epoch done before: no batches to draw
            continue
        run.epoch, before = epoch, run.trained
        if cfg.epoch_schedule:
            logger.info("epoch %d: scheduled values %s", epoch, apply_epoch(
                cfg.epoch_schedule, epoch, objective, optimizer, scheduler))
        run.peak_lrs[epoch] = float(scheduler.base_lrs[0] if scheduler is not None
                                    else optimizer.param_groups[0]["lr"])
        rng = np.random.default_rng([cfg.seed, epoch])
        drop_rng = np.random.default_rng([cfg.seed, epoch, 1])
        for batch in iter_batches(shard, steps, len(model.items), cfg.n_negatives, rng,
                                  cfg.id_dropout, drop_rng):
            if run.step >= total:
                break
            if run.step < start:
                run.step += 1
                continue
            hooks.before_step(run.step, batch)
            run.losses.append(train_step(objective, optimizer, scheduler, batch.to(device),
                                         cfg))
            run.step += 1
            run.clock.tick(batch_size_of(batch))
            hooks.after_step(run)
        if run.trained > before:
            hooks.after_epoch(run, run.losses[before:])
    return run


@dataclass
class Fitted:
    """A trained copy of the model, its optimizer and the run."""

    model: ShopStreamModel
    optimizer: torch.optim.Optimizer
    run: EngineRun


def fit(model: ShopStreamModel, examples: WindowExamples, cfg: TrainConfig,
        settings: WorkerSettings, *, teacher: ShopStreamModel | None = None,
        optimizer_state: OptimizerState | None = None, hooks: StepHooks | None = None
        ) -> Fitted:
    """Train a copy of ``model`` on all of ``examples`` in this process, as one Ray Train
    rank of a 1-worker run starts: seed, copy, shared text cache, optimizer (with the
    saved moments), schedule, objective, then :func:`run_epochs`. ``model`` is left alone."""
    device = resolve_device(cfg.device)
    seed_torch(cfg)
    use_determinism(cfg, device)
    student = copy_model(model).train().to(device)
    teacher = teacher.to(device).eval() if teacher is not None else None
    model.text.use_shared_cache()
    share_text_cache(student, teacher, {})
    optimizer = build_optimizer(student, cfg)
    if optimizer_state is not None:
        restore_optimizer_state(optimizer, student, *optimizer_state)
    examples = examples.materialized()
    steps, total = total_steps(examples, 1, cfg)
    scheduler = build_scheduler(optimizer, total, cfg)
    objective = build_objective(student, teacher, cfg, settings)
    run = run_epochs(objective, student, optimizer, scheduler, examples, cfg, steps, total,
                     device=device, hooks=hooks, clock=StepClock(settings.timing_warmup_steps))
    return Fitted(student, optimizer, run)
