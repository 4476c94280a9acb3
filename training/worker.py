"""The Ray Train worker: one DDP rank training its shard of a window.

Every rank gets the same start state (model, teacher, optimizer moments, examples)
through the Ray object store, trains on ``examples.shard(rank, world_size)`` with the
shared :func:`training.loop.train_step`, and reports a Ray Train checkpoint every
``checkpoint_every`` steps and at the end (rank 0 writes it). A restarted worker group
resumes from the last reported checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from safetensors.torch import load_file

from training.cli import config_from_dict
from training.config import TrainConfig
from training.examples import WindowExamples, iter_batches, steps_per_epoch
from training.loop import batch_size_of, build_optimizer, build_scheduler, train_step
from training.model import ShopStreamModel, model_from_state, save_model
from training.objective import TrainingObjective
from training.optim_state import load_optimizer, restore_optimizer_state, save_optimizer

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
# Steps left out of the steady-state throughput: the first ones fill the text-encoder cache
# and (under DDP) build gradient buckets, so they are several times slower than the rest.
STEADY_WARMUP_STEPS = 5


@dataclass(frozen=True)
class WorkerSettings:
    """The continual-learning settings a worker needs (a slice of IncrementalConfig)."""

    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    adv_epsilon: float = 0.0
    adv_steps: int = 1
    checkpoint_every: int = 0
    inject_failure_at_step: int | None = None
    inject_failure_marker: str | None = None
    timing_warmup_steps: int = STEADY_WARMUP_STEPS


class InjectedFailure(RuntimeError):
    """Raised once, on purpose, to exercise worker-failure recovery in tests."""


def global_steps(examples: WindowExamples, world_size: int, batch_size: int) -> int:
    """Steps per epoch, the same on every rank (from the largest shard's size)."""
    return steps_per_epoch(math.ceil(len(examples.rec) / world_size),
                           math.ceil(len(examples.fraud) / world_size), batch_size)


def _save_checkpoint(model: ShopStreamModel, optimizer: torch.optim.Optimizer, step: int,
                     resumed_from: int | None, directory: Path) -> None:
    save_model(model, directory)
    meta = save_optimizer(directory / "optimizer.safetensors", optimizer, model)
    (directory / STATE_FILE).write_text(json.dumps(
        {"step": step, "resumed_from": resumed_from, "optimizer": meta}))


def _resume(model: ShopStreamModel, optimizer: torch.optim.Optimizer) -> int:
    """Load the last Ray Train checkpoint of this run, if any; the step to resume at."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        path = Path(directory)
        state = json.loads((path / STATE_FILE).read_text())
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        load_optimizer(path / "optimizer.safetensors", optimizer, model, state["optimizer"])
    logger.info("resumed from Ray Train checkpoint at step %d", state["step"])
    return int(state["step"])


class StepClock:
    """A rank's loop timing: overall, the first step on its own, and the steady state.

    ``samples_per_s`` covers the whole loop (as before); ``steady_samples_per_s`` only the
    steps after the first ``warmup`` (all of them when the run has no more).
    """

    def __init__(self, warmup: int) -> None:
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


def _report(model: ShopStreamModel, optimizer: torch.optim.Optimizer, step: int,
            resumed_from: int | None, metrics: dict[str, float]) -> None:
    """Every rank reports (a barrier); only rank 0 writes the checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if ray.train.get_context().get_world_rank() == 0:
            _save_checkpoint(model, optimizer, step, resumed_from, Path(tmp))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def _maybe_fail(settings: WorkerSettings, step: int) -> None:
    if settings.inject_failure_at_step != step or not settings.inject_failure_marker:
        return
    marker = Path(settings.inject_failure_marker)
    if marker.exists():
        return
    marker.write_text(f"failed once at step {step}\n")
    raise InjectedFailure(f"injected worker failure at step {step} (marker {marker})")


def share_text_cache(model: ShopStreamModel, teacher: ShopStreamModel | None,
                     entries: dict[str, torch.Tensor]) -> None:
    """Student and teacher share the frozen text outputs (their frozen weights are the
    same), seeded with the ones the driver computed."""
    model.text.use_shared_cache()
    model.text.import_cache(entries)
    if teacher is not None:
        teacher.text.use_shared_cache()


def _objective(model: ShopStreamModel, teacher: ShopStreamModel | None, cfg: TrainConfig,
               settings: WorkerSettings) -> TrainingObjective:
    return TrainingObjective(model, cfg.task_weights, cfg.fraud_pos_weight, teacher=teacher,
                             distill_weight=settings.distill_weight,
                             distill_temperature=settings.distill_temperature,
                             adv_epsilon=settings.adv_epsilon, adv_steps=settings.adv_steps)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config`` = {train, worker, payload (an ObjectRef)}."""
    cfg = config_from_dict(TrainConfig, config["train"])
    settings = config_from_dict(WorkerSettings, config["worker"])
    payload = ray.get(config["payload"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Dropout and negative sampling are reproducible per (seed, rank).
    torch.manual_seed(cfg.seed * 1000 + rank)
    device = ray.train.torch.get_device()
    model = model_from_state(*payload["model"]).train()
    teacher = model_from_state(*payload["teacher"]).to(device) if payload["teacher"] else None
    share_text_cache(model, teacher, payload.get("text_cache") or {})
    optimizer = build_optimizer(model, cfg)
    if payload["optimizer"] is not None:
        restore_optimizer_state(optimizer, model, *payload["optimizer"])
    start = _resume(model, optimizer)
    objective = ray.train.torch.prepare_model(_objective(model, teacher, cfg, settings))
    optimizer = _move_optimizer(optimizer, device)
    examples: WindowExamples = payload["examples"]
    steps = global_steps(examples, world, cfg.batch_size)
    total = steps * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps,
                                                                 steps * cfg.epochs)
    scheduler = build_scheduler(optimizer, total, cfg)
    for _ in range(start):
        scheduler.step()
    shard = examples.shard(rank, world)
    _run_steps(objective, model, optimizer, scheduler, shard, cfg, settings, start, total, steps)


def _move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device
                    ) -> torch.optim.Optimizer:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    return optimizer


def _run_steps(objective: torch.nn.Module, model: ShopStreamModel,
               optimizer: torch.optim.Optimizer, scheduler: Any, shard: WindowExamples,
               cfg: TrainConfig, settings: WorkerSettings, start: int, total: int,
               steps: int) -> None:
    device = ray.train.torch.get_device()
    step, clock = 0, StepClock(settings.timing_warmup_steps)
    losses: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        # Seeded per epoch: a resumed run replays the same batch order and skips ahead.
        rng = np.random.default_rng([cfg.seed, epoch])
        for batch in iter_batches(shard, steps, len(model.items), cfg.n_negatives, rng):
            if step >= total:
                break
            if step < start:
                step += 1
                continue
            _maybe_fail(settings, step)
            losses.append(train_step(objective, optimizer, scheduler, batch.to(device), cfg))
            step += 1
            clock.tick(batch_size_of(batch))
            last = step == total
            every = settings.checkpoint_every
            if last or (every and step % every == 0):
                metrics = {"step": step, "epoch": epoch, **clock.metrics(),
                           **{k: float(np.mean([r[k] for r in losses[-20:]]))
                              for k in losses[-1]}}
                logger.info("step %d/%d %s", step, total, metrics)
                _report(model, optimizer, step, start or None, metrics)
