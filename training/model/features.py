"""Model-side feature helpers: the fraud head's numeric inputs and the item-title list."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from training.model.vocab import IdMap

MIN_STD = 1e-6


def signed_log1p(x: Tensor) -> Tensor:
    """``log1p(x)`` for x >= 0, mirrored for negative amounts (refunds) instead of NaN."""
    return torch.sign(x) * torch.log1p(x.abs())


def fraud_input_matrix(amount: np.ndarray, features: np.ndarray) -> np.ndarray:
    """[signed_log1p(amount), features] as float64 [n, F+1]: what fraud_mean/std describe."""
    amount = np.asarray(amount, dtype=np.float64).reshape(-1, 1)
    feats = np.asarray(features, dtype=np.float64).reshape(amount.shape[0], -1)
    return np.concatenate([np.sign(amount) * np.log1p(np.abs(amount)), feats], axis=1)


def fraud_stats(amount: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std (floored at 1e-6) of :func:`fraud_input_matrix`, float32."""
    matrix = fraud_input_matrix(amount, features)
    if matrix.shape[0] == 0:
        return np.zeros(matrix.shape[1], np.float32), np.ones(matrix.shape[1], np.float32)
    std = np.maximum(matrix.std(axis=0), MIN_STD)
    return matrix.mean(axis=0).astype(np.float32), std.astype(np.float32)


def item_title_list(items: IdMap, titles: Mapping[str, str]) -> list[str]:
    """``item_titles`` for :class:`ShopStreamModel`: index 0 is "", unknown titles are ""."""
    return [""] + [titles.get(item_id, "") for item_id in items.ids]
