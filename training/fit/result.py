"""What one window's training returns, whichever trainer ran it (Ray Train or local)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from training.model import ShopStreamModel

# (tensors, JSON meta) of an optimizer's state, as training.fit.optim_state writes it.
OptimizerState = tuple[dict[str, torch.Tensor], dict[str, Any]]


@dataclass
class FitResult:
    model: ShopStreamModel
    optimizer: OptimizerState
    steps: int
    seconds: float
    samples_per_s: float
    use_gpu: bool
    resumed_from: int | None
    # The training loop alone (no worker start-up or checkpoint I/O); NaN if not reported.
    loop_seconds: float = math.nan
    # The peak learning rate each trained epoch started with (an epoch schedule's doing).
    epoch_peak_lrs: tuple[float, ...] = ()
    # Which trainer ran the fit (ray or local), and why (trainer=auto's choice).
    trainer: str = "local"
    trainer_reason: str = "trainer=local"
