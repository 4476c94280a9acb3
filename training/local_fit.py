"""The incremental update's training in this process, without Ray (``--trainer local``).

Same start state, objective, batches and schedule as one Ray Train worker
(:mod:`training.worker`), for small runs where Ray Train's start-up (~20 s a fit) would
dominate: the comparison arms of the pipeline report, debugging, a laptop without Ray
workers. No mid-run checkpoints: a failure fails the call.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from training.config import TrainConfig
from training.examples import WindowExamples, iter_batches
from training.fit_result import FitResult, OptimizerState
from training.loop import (
    batch_size_of,
    build_optimizer,
    build_scheduler,
    resolve_device,
    train_step,
)
from training.model import ShopStreamModel, model_from_state, model_state
from training.objective import TrainingObjective
from training.optim_state import optimizer_state_tensors, restore_optimizer_state
from training.worker import (
    STEADY_WARMUP_STEPS,
    StepClock,
    WorkerSettings,
    global_steps,
    share_text_cache,
)

logger = logging.getLogger(__name__)


def fit_local(train_cfg: TrainConfig, settings: WorkerSettings, model: ShopStreamModel,
              teacher: ShopStreamModel | None, optimizer: OptimizerState | None,
              examples: WindowExamples, window_id: str) -> FitResult:
    """Train a copy of ``model`` on all of ``examples`` (world size 1) in this process."""
    began = time.perf_counter()
    torch.manual_seed(train_cfg.seed * 1000)
    device = resolve_device(train_cfg.device)
    student = model_from_state(*model_state(model)).train().to(device)
    teacher = teacher.to(device).eval() if teacher is not None else None
    model.text.use_shared_cache()
    share_text_cache(student, teacher, {})
    opt = build_optimizer(student, train_cfg)
    if optimizer is not None:
        restore_optimizer_state(opt, student, *optimizer)
    steps = global_steps(examples, 1, train_cfg.batch_size)
    total = steps * train_cfg.epochs if train_cfg.max_steps is None else \
        min(train_cfg.max_steps, steps * train_cfg.epochs)
    scheduler = build_scheduler(opt, total, train_cfg)
    objective = TrainingObjective(
        student, train_cfg.task_weights, train_cfg.fraud_pos_weight, teacher=teacher,
        distill_weight=settings.distill_weight if teacher is not None else 0.0,
        distill_temperature=settings.distill_temperature, adv_epsilon=settings.adv_epsilon,
        adv_steps=settings.adv_steps)
    clock, step = StepClock(STEADY_WARMUP_STEPS), 0
    for epoch in range(train_cfg.epochs):
        rng = np.random.default_rng([train_cfg.seed, epoch])
        for batch in iter_batches(examples, steps, len(student.items), train_cfg.n_negatives,
                                  rng):
            if step >= total:
                break
            train_step(objective, opt, scheduler, batch.to(device), train_cfg)
            step += 1
            clock.tick(batch_size_of(batch))
    metrics = clock.metrics()
    seconds = time.perf_counter() - began
    logger.info("local fit %s: %d steps, %.1f s wall, metrics %s", window_id, step, seconds,
                metrics)
    student.cpu().eval()
    return FitResult(student, optimizer_state_tensors(opt, student), step, seconds,
                     float(metrics["samples_per_s"]), False, None,
                     loop_seconds=float(metrics["train_s"]))
