"""The incremental update's training in this process, without Ray (``--trainer local``).

Same start state, objective, batches and schedule as one Ray Train worker
(:mod:`training.fit.worker`): both run :mod:`training.fit.engine`. For small runs where Ray Train's
start-up (~20 s a fit) would dominate: the comparison arms of the pipeline report,
debugging, a laptop without Ray workers. No mid-run checkpoints: a failure fails the call.
"""

from __future__ import annotations

import logging
import time

from training.config import TrainConfig
from training.features.examples import WindowExamples
from training.fit.engine import WorkerSettings, fit
from training.fit.optim_state import optimizer_state_tensors
from training.fit.result import FitResult, OptimizerState
from training.model import ShopStreamModel

logger = logging.getLogger(__name__)


def fit_local(train_cfg: TrainConfig, settings: WorkerSettings, model: ShopStreamModel,
              teacher: ShopStreamModel | None, optimizer: OptimizerState | None,
              examples: WindowExamples, window_id: str) -> FitResult:
    """Train a copy of ``model`` on all of ``examples`` (world size 1) in this process."""
    began = time.perf_counter()
    fitted = fit(model, examples, train_cfg, settings, teacher=teacher,
                 optimizer_state=optimizer)
    metrics = fitted.run.clock.metrics()
    seconds = time.perf_counter() - began
    logger.info("local fit %s: %d steps, %.1f s wall, metrics %s", window_id, fitted.run.step,
                seconds, metrics)
    student = fitted.model.cpu().eval()
    return FitResult(student, optimizer_state_tensors(fitted.optimizer, student),
                     fitted.run.step, seconds, float(metrics["samples_per_s"]), False, None,
                     loop_seconds=float(metrics["train_s"]),
                     epoch_peak_lrs=tuple(fitted.run.peak_lrs[e]
                                          for e in sorted(fitted.run.peak_lrs)))
