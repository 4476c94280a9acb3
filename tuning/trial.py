"""What one Tune trial runs: the incremental update of ``training.incremental``, scored on
the window after the one it trains on.

Both backends start with :func:`training.update.prepare.prepare_update` (on the sweep's snapshot of
the store), so a trial trains exactly what ``training.incremental`` would with its config:

* ``loop`` (default): one Ray process per trial runs the engine's
  :func:`training.fit.engine.run_epochs` over its objective (tasks + distillation from the
  previous version + FGM), and after every epoch reports the next-window score after every epoch so
  ASHA can stop it and PBT can exploit it. Under PBT each report carries a checkpoint
  (model as safetensors + JSON, optimizer moments as safetensors, the epoch as JSON).
* ``ray_train``: the trial builds the Ray Train ``TorchTrainer`` through
  :func:`training.fit.raytrain.fit_window` (DDP over ``num_workers``) and reports once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.evaluation.evaluate import evaluate_fraud, evaluate_rec
from training.features.examples import WindowExamples
from training.fit.engine import (
    EngineRun,
    StepHooks,
    build_objective,
    build_optimizer,
    build_scheduler,
    resolve_device,
    run_epochs,
    total_steps,
)
from training.fit.loop import prepare_window
from training.fit.optim_state import (
    OPTIMIZER_FILE,
    load_optimizer,
    restore_optimizer_state,
    save_optimizer,
)
from training.fit.raytrain import fit_window, worker_settings
from training.incremental_config import TUNABLE_INCREMENTAL, IncrementalConfig
from training.model import ModelConfig, ShopStreamModel, load_model, save_model
from training.update.gate import main_metrics
from training.update.prepare import Update, prepare_update
from tuning.report import combined_score
from tuning.snapshot import SnapshotStore
from tuning.space import TRAIN_KEYS

logger = logging.getLogger(__name__)

STATE_FILE = "trial_state.json"


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled config (shipped once per sweep)."""

    inc: IncrementalConfig
    train: TrainConfig
    model: ModelConfig
    synthetic: SyntheticShopConfig | None
    store: SnapshotStore
    rec_weight: float
    fraud_weight: float
    max_epochs: int
    checkpoints: bool
    mutable: tuple[str, ...] = ()  # PBT's keys: recorded per epoch as the trial's schedule

    def configs(self, config: dict[str, Any]) -> tuple[TrainConfig, IncrementalConfig]:
        """The base configs with the trial's sampled values (validated by the configs)."""
        values = {k: plain(v) for k, v in config.items()}
        # A schedule from an earlier sweep must not override what this trial samples.
        train = dataclasses.replace(self.train, epochs=self.max_epochs, epoch_schedule=(),
                                    **{k: v for k, v in values.items() if k in TRAIN_KEYS})
        inc = self.inc.with_settings(**{k: v for k, v in values.items()
                                        if k in TUNABLE_INCREMENTAL})
        return train, inc


def plain(value: Any) -> Any:
    """numpy scalars (Tune samples some) as Python values, so they stay JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def next_window_metrics(model: ShopStreamModel, up: Update, k: int, rec_weight: float,
                        fraud_weight: float) -> dict[str, float]:
    """NDCG@k and AUC-PR on the window after the trained one, with the purchase history
    updated by the whole trained window (what serving would know)."""
    nxt = up.next_window()
    if nxt is None:
        raise ValueError(f"window {up.window.window_id} is the last one: nothing to score on")
    model.eval()
    history = up.history.update(up.window.interactions)
    rec = evaluate_rec(model, history, up.window.interactions, nxt, k=k) \
        if len(nxt.interactions) else {}
    main = main_metrics(rec, evaluate_fraud(model, history, nxt), k)
    return {"score": combined_score(main["rec"], main["fraud"], rec_weight, fraud_weight),
            "rec_ndcg": main["rec"], "fraud_auc_pr": main["fraud"]}


@dataclass
class _State:
    model: ShopStreamModel
    examples: WindowExamples
    optimizer: torch.optim.Optimizer
    epoch: int
    # Per trained epoch, the PBT-mutable values it ran with (a cloned trial's come along).
    schedule: list[dict[str, float]] = dataclasses.field(default_factory=list)


def _fresh_state(up: Update, cfg: TrainConfig, device: torch.device) -> _State:
    model = up.model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    if up.parent is not None and up.parent.optimizer is not None:
        restore_optimizer_state(optimizer, model, *up.parent.optimizer)
    return _State(model, up.examples.materialized(), optimizer, 0)


def _resumed_state(up: Update, cfg: TrainConfig, device: torch.device,
                   directory: Path) -> _State:
    """State from a Tune checkpoint, possibly another trial's (PBT exploit): its model
    replaces ours, so the examples are rebuilt against its vocabulary."""
    model = load_model(directory)
    prepare_window(model, up.mixed)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    load_optimizer(directory / OPTIMIZER_FILE, optimizer, model)
    state = json.loads((directory / STATE_FILE).read_text())
    logger.info("trial resumes at epoch %d from a checkpoint", state["epoch"])
    epoch = int(state["epoch"])
    return _State(model, WindowExamples.build(model, up.mixed, up.history), optimizer, epoch,
                  list(state.get("schedule", []))[:epoch])


def _report(metrics: dict[str, Any], state: _State, with_checkpoint: bool) -> None:
    if not with_checkpoint:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="shopstream-ckpt-") as tmp:
        save_model(state.model, tmp)
        save_optimizer(Path(tmp) / OPTIMIZER_FILE, state.optimizer, state.model)
        (Path(tmp) / STATE_FILE).write_text(json.dumps({"epoch": state.epoch,
                                                        "schedule": state.schedule}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def loop_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable of the ``loop`` backend (one process, one device)."""
    cfg, inc = ctx.configs(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None and _checkpoint_epoch(checkpoint) >= cfg.epochs:
        # PBT cloned a finished trial into this one: nothing is left to train.
        return
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="shopstream-trial-") as tmp:
        up = prepare_update(ctx.store, inc, cfg, ctx.model, ctx.synthetic, Path(tmp))
        if checkpoint is None:
            state = _fresh_state(up, cfg, device)
        else:
            with checkpoint.as_directory() as directory:
                state = _resumed_state(up, cfg, device, Path(directory))
        _train_epochs(up, state, cfg, inc, ctx, device)


def _checkpoint_epoch(checkpoint: tune.Checkpoint) -> int:
    with checkpoint.as_directory() as directory:
        return int(json.loads((Path(directory) / STATE_FILE).read_text())["epoch"])


class _EpochReports(StepHooks):
    """After every epoch: score on the next window and report (with a checkpoint)."""

    def __init__(self, up: Update, state: _State, cfg: TrainConfig, ctx: TrialContext,
                 inc: IncrementalConfig) -> None:
        self.up, self.state, self.cfg, self.ctx, self.inc = up, state, cfg, ctx, inc

    def after_epoch(self, run: EngineRun, losses: list[dict[str, float]]) -> None:
        state = self.state
        state.epoch = run.epoch + 1
        if self.ctx.mutable:  # PBT: what this epoch ran with
            values = {key: float(getattr(self.cfg, key, getattr(self.inc, key, math.nan)))
                      for key in self.ctx.mutable}
            state.schedule = state.schedule[:run.epoch] + [values]
        metrics: dict[str, Any] = {
            **next_window_metrics(state.model, self.up, self.cfg.eval_k,
                                  self.ctx.rec_weight, self.ctx.fraud_weight),
            "epoch": state.epoch, "loss": float(np.mean([r["loss"] for r in losses])),
            "lr": float(state.optimizer.param_groups[0]["lr"]),
            "schedule": json.dumps(state.schedule)}
        logger.info("epoch %d/%d: %s", state.epoch, self.cfg.epochs, metrics)
        _report(metrics, state, self.ctx.checkpoints)


def _train_epochs(up: Update, state: _State, cfg: TrainConfig, inc: IncrementalConfig,
                  ctx: TrialContext, device: torch.device) -> None:
    objective = build_objective(state.model, up.teacher, cfg,
                                worker_settings(inc, up.teacher is not None))
    steps, total = total_steps(state.examples, 1, cfg)
    done = min(state.epoch * steps, total)
    # The schedule starts at the resumed step, at this trial's own (possibly PBT-perturbed)
    # peak learning rate.
    scheduler = build_scheduler(state.optimizer, total, cfg, start=done)
    run_epochs(objective, state.model, state.optimizer, scheduler, state.examples, cfg, steps,
               total, device=device, start=done,
               hooks=_EpochReports(up, state, cfg, ctx, inc))


def ray_train_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable of the ``ray_train`` backend: fit, score, report once."""
    cfg, inc = ctx.configs(config)
    # This backend exists to fit a TorchTrainer per trial, whatever the update's size.
    inc = inc.with_settings(trainer="ray")
    with tempfile.TemporaryDirectory(prefix="shopstream-trial-") as tmp:
        up = prepare_update(ctx.store, inc, cfg, ctx.model, ctx.synthetic, Path(tmp))
        optimizer = up.parent.optimizer if up.parent is not None else None
        fit = fit_window(inc, cfg, up.model, up.teacher, optimizer, up.examples,
                         up.window.window_id)
        metrics = next_window_metrics(fit.model, up, cfg.eval_k, ctx.rec_weight,
                                      ctx.fraud_weight)
    tune.report({**metrics, "epoch": cfg.epochs, "fit_seconds": fit.seconds,
                 "samples_per_s": fit.samples_per_s})
