"""The ranking-time terms of :meth:`training.model.ShopStreamModel.pool_scores`.

They are not trained: each update chooses them on held-out rows (training.update.ranking_terms)
and they travel in the version's :class:`~training.model.config.ModelConfig`. Own items
rank by repeat-then-popular's own order (purchase count, ties to the more recent), every
other item by its count in the last update, so at a large weight the model only breaks
repeat-then-popular's ties.

The cold weight at its bound, :data:`STRICT_COLD_WEIGHT`, is the limit of that blend: cold
users' lists follow the last-update count strictly. Equal counts (common: weekly counts
are small integers) go by ``cold_ties``: ``item_id``, the baseline's own rule (the smaller
id first, :func:`id_ranks`), which makes the list the popularity baseline's list itself, or
``model``, the towers. Items nobody bought in the last update, which the baseline cannot
order, always follow the towers. Without held-out evidence an update takes the bound with
``item_id`` (training.update.ranking_terms): the towers then do not break the baseline's
ties either. A finite weight cannot promise the baseline's list: two items of high, close
counts (200 and 199 purchases) differ by under 0.01 in log count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from training.features.profile import POPULARITY_FEATURES, REPEAT_FEATURES
from training.model.config import ModelConfig

OWN_COUNT = REPEAT_FEATURES.index("log_count")
OWN_RANK = REPEAT_FEATURES.index("log_count_rank")
LAST_COUNT = POPULARITY_FEATURES.index("log_count_last_update")
# ModelConfig's bound of cold_count_weight: cold users rank by count strictly at it.
STRICT_COLD_WEIGHT = 100.0


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


def id_ranks(item_ids: Sequence[str]) -> Tensor:
    """[n] int64: each item's position among ``item_ids`` in ascending string order, the
    popularity baseline's tie rule (training.evaluation.baselines: equal counts go to the
    smaller ``item_id``)."""
    order = np.argsort(np.asarray([str(i) for i in item_ids], dtype=object), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return torch.from_numpy(ranks)


def strict_count_order(scores: Tensor, last: Tensor, rows: Tensor,
                       tie_rank: Tensor | None) -> Tensor:
    """``scores`` [B, n] with the rows ``rows`` [B] replaced by each item's position (0 =
    last) in the order of the last-update count ``last`` [n], equal counts of bought items
    by ``tie_rank`` [n] (the smaller first: :func:`id_ranks`, the popularity baseline's
    rule) or, with None, by the row's own score; items nobody bought in the last update (no
    place in the baseline's list: new items, or every item when nothing was bought) by the
    row's own score. Positions, not a weighted sum, so no count gap is too small to hold."""
    sub = scores[rows]
    last = last.to(scores.dtype)
    # Stable sorts, least significant key first; ascending positions end with the best.
    order = sub.argsort(dim=1, stable=True)
    if tie_rank is not None:
        rank = tie_rank.to(scores.device)
        tie = torch.where(last > 0, -rank, torch.zeros_like(rank))
        order = order.gather(1, tie[order].argsort(dim=1, stable=True))
    order = order.gather(1, last[order].argsort(dim=1, stable=True))
    positions = torch.arange(order.shape[1], device=scores.device, dtype=scores.dtype)
    out = scores.clone()
    out[rows] = torch.empty_like(sub).scatter_(1, order, positions.expand_as(sub))
    return out


def cold_tie_rank(cfg: ModelConfig, pool_rank: Tensor | None, n: int,
                  device: torch.device) -> Tensor | None:
    """The tie order :func:`strict_count_order` uses under ``cfg.cold_ties``: None (the
    towers) for ``model``; for ``item_id`` the pool's :func:`id_ranks`, or its positions
    when the caller has no ids."""
    if cfg.cold_ties == "model":
        return None
    return pool_rank if pool_rank is not None else torch.arange(n, device=device)


def own_order(rep_pos: Tensor, rep_feats: Tensor, last: Tensor | None) -> Tensor:
    """[B, R] repeat-then-popular's order of own items as a score: log count minus log
    count rank, which falls strictly with the rank (count ties go to the more recent
    purchase), minus the item's last-update count ``last`` [n] (pool order), which every
    item gets and own items do not rank by."""
    order = rep_feats[..., OWN_COUNT] - rep_feats[..., OWN_RANK]
    if last is None:
        return order
    return order - last[rep_pos.clamp(min=0)]
