"""The single-process per-window training loop: :func:`train_window` over the engine.

The step, optimizer, schedule and epoch loop live in :mod:`training.fit.engine` (shared with the
Ray Train worker, the local trainer and the Tune trials); this module grows the model's
vocabulary for a window and trains it in place.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from training.config import TrainConfig
from training.data.schema import WindowData
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.engine import (
    EngineRun,
    StepHooks,
    WorkerSettings,
    batch_size_of,
    build_optimizer,
    build_scheduler,
    fit,
    lr_factor,
    resolve_device,
    total_steps,
)
from training.model import IdMap, ModelConfig, ShopStreamModel, fraud_stats

__all__ = ["TrainStats", "batch_size_of", "build_optimizer", "build_scheduler", "lr_factor",
           "prepare_window", "resolve_device", "train_window"]

logger = logging.getLogger(__name__)


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    samples: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def mean_loss(self, key: str = "loss", last: int = 20) -> float:
        tail = [row[key] for row in self.losses[-last:]]
        return float(np.mean(tail)) if tail else float("nan")


def prepare_window(model: ShopStreamModel, window: WindowData) -> dict[str, int]:
    """Grow the model's vocabularies with the window's new users and items."""
    titles = dict(zip(window.items["item_id"], window.items["title"]))
    # Each column's distinct ids first, then those of both in first-seen order (the order
    # ids get their rows): no concatenated copy of millions of ids.
    users = pd.unique(np.concatenate([
        np.asarray(window.interactions["user_id"].unique(), dtype=object),
        np.asarray(window.transactions["user_id"].dropna().unique(), dtype=object)]))
    items = pd.unique(np.concatenate([
        np.asarray(window.items["item_id"].unique(), dtype=object),
        np.asarray(window.interactions["item_id"].unique(), dtype=object)]))
    return model.extend_vocab(users, items, titles)


class _ProgressBar(StepHooks):
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def after_step(self, run: EngineRun) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{run.losses[-1]['loss']:.3f}",
                             sps=f"{run.clock.metrics()['samples_per_s']:.0f}")


def train_window(model: ShopStreamModel, window: WindowData, history: PurchaseHistory,
                 cfg: TrainConfig, progress: bool = True) -> TrainStats:
    """Single-process training on one window (the model's vocab already covers it): the
    engine's :func:`training.fit.engine.fit` without distillation, its weights copied back."""
    model.to(resolve_device(cfg.device))
    examples = WindowExamples.build(model, window, history)
    _, total = total_steps(examples, 1, cfg)
    with tqdm(total=total, desc=f"train {window.window_id}", disable=not progress,
              unit="step") as bar:
        fitted = fit(model, examples, cfg, WorkerSettings(), hooks=_ProgressBar(bar))
    model.load_state_dict(fitted.model.state_dict())
    model.train()
    run = fitted.run
    stats = TrainStats(steps=run.trained, seconds=time.perf_counter() - run.clock.began,
                       samples=run.clock.samples, losses=run.losses)
    logger.info("trained window %s: %d steps, %d samples, %.1f samples/s, loss %.4f",
                window.window_id, stats.steps, stats.samples, stats.samples_per_s,
                stats.mean_loss())
    return stats


def init_model(model_cfg: ModelConfig, window: WindowData) -> ShopStreamModel:
    """A fresh model (pretrained encoder) whose vocab and fraud scaling fit ``window``."""
    features = tuple(window.fraud_features)
    cfg = dataclasses.replace(model_cfg, fraud_features=features)
    torch.manual_seed(cfg.seed)
    model = ShopStreamModel(cfg, IdMap(), IdMap(), [""])
    prepare_window(model, window)
    txns = window.transactions
    if len(txns):
        model.set_fraud_stats(*fraud_stats(txns["amount"].to_numpy(dtype=np.float64),
                                           txns[list(features)].to_numpy(dtype=np.float64)))
    return model
