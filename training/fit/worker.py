"""The Ray Train worker: one DDP rank training its shard of a window.

Every rank gets the same start state: model, teacher and optimizer moments as a checkpoint
in Ray Train storage (:mod:`training.fit.start_state`), and reads only its own shard of the
examples from there (:mod:`training.fit.example_shards`: ``examples.shard(rank, world_size)``,
steps from the manifest's row counts, so every rank runs as many), into memory or, above
``examples_memory_mib``, into mapped local files (:mod:`training.fit.shard_spill`). It trains
it with the engine's :func:`training.fit.engine.run_epochs`; this module adds only what Ray
needs: start-up, DDP, a Ray Train checkpoint every ``checkpoint_every`` steps and at the end
(rank 0 writes it), and the resume: a restarted worker group goes on from the last reported
checkpoint.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from training.cli import config_from_dict
from training.config import TrainConfig
from training.fit.engine import (
    STEADY_WARMUP_STEPS,
    EngineRun,
    StepClock,
    StepHooks,
    WorkerSettings,
    build_objective,
    build_optimizer,
    build_scheduler,
    global_steps,
    rows_steps,
    run_epochs,
    run_steps,
    seed_torch,
    share_text_cache,
    use_determinism,
)
from training.fit.example_shards import read_example_shard, read_manifest, shard_bytes
from training.fit.optim_state import (
    OPTIMIZER_FILE,
    load_optimizer,
    restore_optimizer_state,
    save_optimizer,
)
from training.fit.shard_spill import ShardSpill, spill_needed
from training.fit.start_state import read_start_state
from training.model import MultiTaskBatch, ShopStreamModel, save_model
from training.model.io import load_checkpoint_into

__all__ = ["STATE_FILE", "STEADY_WARMUP_STEPS", "InjectedFailure", "WorkerSettings",
           "global_steps", "train_loop_per_worker"]

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"


class InjectedFailure(RuntimeError):
    """Raised once, on purpose, to exercise worker-failure recovery in tests."""


def _save_checkpoint(model: ShopStreamModel, optimizer: torch.optim.Optimizer, step: int,
                     resumed_from: int | None, directory: Path) -> None:
    save_model(model, directory)
    meta = save_optimizer(directory / OPTIMIZER_FILE, optimizer, model)
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
        load_checkpoint_into(model, path)
        load_optimizer(path / OPTIMIZER_FILE, optimizer, model, state["optimizer"])
    logger.info("resumed from Ray Train checkpoint at step %d", state["step"])
    return int(state["step"])


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


class _RayHooks(StepHooks):
    """The failure injection before a step; the report (and checkpoint) after it."""

    def __init__(self, model: ShopStreamModel, optimizer: torch.optim.Optimizer,
                 settings: WorkerSettings, start: int, spill: ShardSpill | None = None
                 ) -> None:
        self.model, self.optimizer, self.settings, self.start = model, optimizer, settings, start
        self.spill = spill

    def before_step(self, step: int, batch: MultiTaskBatch) -> None:
        _maybe_fail(self.settings, step)

    def after_step(self, run: EngineRun) -> None:
        if self.spill is not None:
            self.spill.release()
        every = self.settings.checkpoint_every
        if run.step == run.total or (every and run.step % every == 0):
            metrics = run.metrics()
            logger.info("step %d/%d %s", run.step, run.total, metrics)
            _report(self.model, self.optimizer, run.step, self.start or None, metrics)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config`` = {train, worker, start (a ``ray.train.Checkpoint``
    of :mod:`training.fit.start_state`), examples (a ``ray.train.Checkpoint`` handle on the
    :mod:`training.fit.example_shards` directory)}."""
    cfg = config_from_dict(TrainConfig, config["train"])
    settings = config_from_dict(WorkerSettings, config["worker"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Seeded before the model is built (as ever): changing this order changes the dropout.
    seed_torch(cfg, rank)
    device = ray.train.torch.get_device()
    use_determinism(cfg, device)
    with config["start"].as_directory() as directory:
        state = read_start_state(Path(directory))
    model, teacher = state.model, state.teacher
    if teacher is not None:
        teacher = teacher.to(device)
    share_text_cache(model, teacher, state.text_cache)
    optimizer = build_optimizer(model, cfg)
    if state.optimizer is not None:
        restore_optimizer_state(optimizer, model, *state.optimizer)
    start = _resume(model, optimizer)
    objective = ray.train.torch.prepare_model(build_objective(model, teacher, cfg, settings))
    optimizer = _move_optimizer(optimizer, device)
    shards: ray.train.Checkpoint = config["examples"]
    manifest = read_manifest(shards.path, shards.filesystem)
    spill = ShardSpill() if spill_needed(shard_bytes(manifest, rank, world),
                                         settings.examples_memory_mib) else None
    try:
        shard = read_example_shard(shards.path, shards.filesystem, rank, world, manifest,
                                   spill)
        steps, total = run_steps(rows_steps(manifest["rec_rows"], manifest["fraud_rows"],
                                            world, cfg.batch_size), cfg)
        scheduler = build_scheduler(optimizer, total, cfg, start=start)
        run_epochs(objective, model, optimizer, scheduler, shard, cfg, steps,
                   total, device=device, start=start,
                   hooks=_RayHooks(model, optimizer, settings, start, spill),
                   clock=StepClock(settings.timing_warmup_steps))
    finally:
        if spill is not None:
            spill.remove()


def _move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device
                    ) -> torch.optim.Optimizer:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    return optimizer


