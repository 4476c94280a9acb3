"""The training step and per-window training loop, shared by one process and Ray workers.

A Ray Train worker calls exactly :func:`train_step` on its (DDP-wrapped) model; the
single-process path calls :func:`train_window`, which is the same step in a loop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from training.config import TrainConfig
from training.data.schema import WindowData
from training.examples import WindowExamples, iter_batches, steps_per_epoch
from training.history import PurchaseHistory
from training.model import MultiTaskBatch, ShopStreamModel
from training.objective import TrainingObjective

logger = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


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


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg))


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
    users = pd.concat([window.interactions["user_id"],
                       window.transactions["user_id"].dropna()]).unique()
    items = pd.concat([window.items["item_id"], window.interactions["item_id"]]).unique()
    return model.extend_vocab(users, items, titles)


def batch_size_of(batch: MultiTaskBatch) -> int:
    rec = len(batch.rec.target_idx) if batch.rec is not None else 0
    fraud = len(batch.fraud.label) if batch.fraud is not None else 0
    return rec + fraud


def train_window(model: ShopStreamModel, window: WindowData, history: PurchaseHistory,
                 cfg: TrainConfig, progress: bool = True) -> TrainStats:
    """Single-process training on one window (the model's vocab already covers it)."""
    device = resolve_device(cfg.device)
    model.to(device)
    examples = WindowExamples.build(model, window, history)
    steps = steps_per_epoch(len(examples.rec), len(examples.fraud), cfg.batch_size)
    total = steps * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps,
                                                                 steps * cfg.epochs)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, total, cfg)
    rng = np.random.default_rng(cfg.seed)
    objective = TrainingObjective(model, cfg.task_weights, cfg.fraud_pos_weight)
    stats = TrainStats()
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"train {window.window_id}", disable=not progress, unit="step")
    for _ in range(cfg.epochs):
        for batch in iter_batches(examples, steps, len(model.items), cfg.n_negatives, rng):
            if stats.steps >= total:
                break
            row = train_step(objective, optimizer, scheduler, batch.to(device), cfg)
            stats.steps += 1
            stats.samples += batch_size_of(batch)
            stats.losses.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}",
                            sps=f"{stats.samples / (time.perf_counter() - start):.0f}")
    bar.close()
    stats.seconds = time.perf_counter() - start
    logger.info("trained window %s: %d steps, %d samples, %.1f samples/s, loss %.4f",
                window.window_id, stats.steps, stats.samples, stats.samples_per_s,
                stats.mean_loss())
    return stats
