"""The ranking-time terms of :meth:`training.model.ShopStreamModel.pool_scores`.

They are not trained: each update chooses them on held-out rows (training.update.ranking_terms)
and they travel in the version's :class:`~training.model.config.ModelConfig`. Own items
rank by repeat-then-popular's own order (purchase count, ties to the more recent), every
other item by its count in the last update, so at a large weight the model only breaks
repeat-then-popular's ties.

The cold weight at its bound, :data:`STRICT_COLD_WEIGHT`, is the limit of that blend: cold
users' lists follow the last-update count strictly (the popularity baseline's list), the
model ordering only items of equal count. A finite weight cannot promise that: two items of
high, close counts (200 and 199 purchases) differ by under 0.01 in log count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.features.profile import POPULARITY_FEATURES, REPEAT_FEATURES
from training.model.config import ModelConfig

OWN_COUNT = REPEAT_FEATURES.index("log_count")
OWN_RANK = REPEAT_FEATURES.index("log_count_rank")
LAST_COUNT = POPULARITY_FEATURES.index("log_count_last_update")
# ModelConfig's bound of cold_count_weight: cold users rank by count strictly at it.
STRICT_COLD_WEIGHT = 100.0
# Share of one count level the model's tie-break may span: below 1, so it never crosses one.
TIE_SPAN = 0.5


def row_count_weights(cfg: ModelConfig, own: Tensor | None, rows: int, like: Tensor) -> Tensor:
    """Per user [rows]: ``cfg.count_weight`` if the user has an own item in ``own`` [B, R]
    (1.0 = own), else ``cfg.cold_count_weight`` (also for every row when ``own`` is None)."""
    cold = torch.full((rows,), cfg.cold_count_weight, dtype=like.dtype, device=like.device)
    if own is None:
        return cold
    return torch.where(own.amax(dim=1) > 0, torch.full_like(cold, cfg.count_weight), cold)


def strict_cold_rows(cfg: ModelConfig, own: Tensor | None, rows: int,
                     device: torch.device) -> Tensor | None:
    """[rows] bool: cold users (no own item in ``own``) when ``cfg.cold_count_weight`` is
    :data:`STRICT_COLD_WEIGHT`; None when no row is strict."""
    if cfg.cold_count_weight < STRICT_COLD_WEIGHT:
        return None
    cold = torch.ones(rows, dtype=torch.bool, device=device) if own is None \
        else own.amax(dim=1) <= 0
    return cold if bool(cold.any()) else None


def strict_count_order(scores: Tensor, last: Tensor, rows: Tensor,
                       weight: Tensor | None) -> Tensor:
    """``scores`` [B, n] with the rows ``rows`` [B] replaced by the last-update count order
    ``last`` [n] (its dense rank, 0 = fewest), each row's score without its count term
    ``weight`` [B] * ``last`` (which would flatten the tie-break's span), scaled into
    [0, :data:`TIE_SPAN`], ordering only items of equal count."""
    levels = torch.unique(last, return_inverse=True)[1].to(scores.dtype)
    sub = scores[rows]
    if weight is not None:
        sub = sub - weight[rows, None] * last[None, :]
    low = sub.amin(dim=1, keepdim=True)
    span = (sub.amax(dim=1, keepdim=True) - low).clamp_min(torch.finfo(scores.dtype).tiny)
    out = scores.clone()
    out[rows] = levels[None, :] + (sub - low) / span * TIE_SPAN
    return out


def own_order(rep_pos: Tensor, rep_feats: Tensor, last: Tensor | None) -> Tensor:
    """[B, R] repeat-then-popular's order of own items as a score: log count minus log
    count rank, which falls strictly with the rank (count ties go to the more recent
    purchase), minus the item's last-update count ``last`` [n] (pool order), which every
    item gets and own items do not rank by."""
    order = rep_feats[..., OWN_COUNT] - rep_feats[..., OWN_RANK]
    if last is None:
        return order
    return order - last[rep_pos.clamp(min=0)]
