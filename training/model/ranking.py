"""The ranking-time terms of :meth:`training.model.ShopStreamModel.pool_scores`.

They are not trained: each update chooses them on held-out rows (training.update.ranking_terms)
and they travel in the version's :class:`~training.model.config.ModelConfig`. Own items
rank by repeat-then-popular's own order (purchase count, ties to the more recent), every
other item by its count in the last update, so at a large weight the model only breaks
repeat-then-popular's ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.features.profile import POPULARITY_FEATURES, REPEAT_FEATURES
from training.model.config import ModelConfig

OWN_COUNT = REPEAT_FEATURES.index("log_count")
OWN_RANK = REPEAT_FEATURES.index("log_count_rank")
LAST_COUNT = POPULARITY_FEATURES.index("log_count_last_update")


def row_count_weights(cfg: ModelConfig, own: Tensor | None, rows: int, like: Tensor) -> Tensor:
    """Per user [rows]: ``cfg.count_weight`` if the user has an own item in ``own`` [B, R]
    (1.0 = own), else ``cfg.cold_count_weight`` (also for every row when ``own`` is None)."""
    cold = torch.full((rows,), cfg.cold_count_weight, dtype=like.dtype, device=like.device)
    if own is None:
        return cold
    return torch.where(own.amax(dim=1) > 0, torch.full_like(cold, cfg.count_weight), cold)


def own_order(rep_pos: Tensor, rep_feats: Tensor, last: Tensor | None) -> Tensor:
    """[B, R] repeat-then-popular's order of own items as a score: log count minus log
    count rank, which falls strictly with the rank (count ties go to the more recent
    purchase), minus the item's last-update count ``last`` [n] (pool order), which every
    item gets and own items do not rank by."""
    order = rep_feats[..., OWN_COUNT] - rep_feats[..., OWN_RANK]
    if last is None:
        return order
    return order - last[rep_pos.clamp(min=0)]
