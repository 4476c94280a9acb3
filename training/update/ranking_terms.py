"""Choose the ranking-time terms of a candidate on its held-out tail.

Retail baskets are mostly repeat purchases, and repeat-then-popular ("the user's own items,
most bought first, then the popular ones") is a hard bar. The model has a learned repeat
term, but with few optimizer steps per update (small windows) it cannot learn how far above
new items a user's own items belong, nor how to order them; putting that margin into the
training loss as a fixed prior saturates the softmax and teaches the repeat term the wrong
sign (see docs/continual_learning.md, section 3). So repeat-then-popular's signals join the
score at ranking time only, outside the loss, as a held-out-validated blend
(training.model.ranking):

* ``repeat_bonus``: a constant on the user's own past items (large: own items first);
* ``count_weight``: a weight on repeat-then-popular's order — own items by the user's own
  purchase count (ties: the more recent), every other item by its purchase count in the
  last update. At the grid's large end the list *is* repeat-then-popular's, the model
  breaking its ties; at 0 it is the model's.
* ``cold_count_weight``: the same weight for users without own items (cold users), whose
  list the popularity term alone moves; its bound (:data:`COLD_FALLBACK_WEIGHT`) is the
  popularity baseline's list itself, and competes with the grid.

Each update scores every (bonus, weight) pair of the grids on its held-out tail and keeps
the pair with the best warm-user NDCG@k (ties: the smaller weight, then the smaller bonus,
so the model's own order stays unless held-out rows ask otherwise). Real cold users are too
few in a tail to choose from (0-12 a month on Online Retail), so the cold weight is chosen
on every held-out user with a later basket, ranked *as if cold* — id hidden, no own items,
the first basket in the tail as the query (the evaluation's cold protocol). With fewer than
:data:`MIN_COLD_USERS` such users there is no evidence to blend on, and cold users get
:data:`COLD_FALLBACK_WEIGHT`: the popularity baseline's list, equal counts included (the
smaller item id first, as the baseline breaks them): without evidence the towers order
only what the baseline cannot, the items nobody bought in the last update. With evidence,
that list and the same with the towers breaking its ties (``cold_ties``) compete with the
grid's weights.
The values travel with the version (``ModelConfig``), so evaluation and serving rank with
them alike.

The held-out tail is also the gate's slice, so the candidate's gate score is its best over
the grid: a small optimistic bias of the gate, accepted because the tail is the only data
of the new window the candidate has not trained on.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch

from training.data.schema import WindowData
from training.evaluation.evaluate import (
    candidate_matrix,
    pool_positions,
    pool_query,
    rank_query,
    rec_queries,
)
from training.evaluation.rec_split import split_rec_metrics
from training.features.history import PurchaseHistory
from training.model import ShopStreamModel
from training.model.ranking import STRICT_COLD_WEIGHT

# Held-out users needed to choose the cold weight: with per-user NDCG spread near 0.25, 100
# users give the mean a standard error near 0.025, the size of the differences in question.
MIN_COLD_USERS = 100
# Cold users' weight without evidence: the bound, where their lists are the popularity
# baseline's (last-update counts strictly, equal counts by item id:
# training.model.ranking.strict_count_order). The grid's own top (10) lets the towers
# reorder items whose counts differ by under ~20%.
COLD_FALLBACK_WEIGHT = STRICT_COLD_WEIGHT
# Stands for every user ranked as cold: an id no real user has (it looks up to unknown).
AS_COLD = "\x00as-cold"


def choose_ranking_terms(model: ShopStreamModel, history: PurchaseHistory, window: WindowData,
                         bonuses: tuple[float, ...], weights: tuple[float, ...], k: int
                         ) -> dict[str, Any]:
    """Set ``model``'s ranking terms to the grid pair with the best warm NDCG@k on
    ``window`` (ranked against ``history``) and the cold weight and tie rule with the best
    NDCG@k of ``window``'s users ranked as cold. Returns {"repeat_bonus", "count_weight",
    "cold_count_weight", "cold_ties", "previous", "warm_ndcg": {"bonus,weight": metric},
    "n_warm", "cold_ndcg": {:func:`cold_key`: metric}, "n_as_cold"}; keeps the model's terms
    when a grid is empty, and its warm terms when the window has no warm user."""
    cfg = model.cfg
    previous = (cfg.repeat_bonus, cfg.count_weight, cfg.cold_count_weight, cfg.cold_ties)
    out: dict[str, Any] = {"repeat_bonus": previous[0], "count_weight": previous[1],
                           "cold_count_weight": previous[2], "cold_ties": previous[3],
                           "previous": list(previous),
                           "warm_ndcg": {}, "n_warm": 0, "cold_ndcg": {}, "n_as_cold": 0}
    if not bonuses or not weights or not len(window.interactions):
        return out
    began = time.perf_counter()
    model.eval()
    candidates, matrix = candidate_matrix(model, window)
    pool = {item: i for i, item in enumerate(candidates)}
    out.update(_choose_warm(model, history, window, candidates, matrix, pool,
                            bonuses, weights, k))
    out.update(_choose_cold(model, history, window, candidates, matrix, pool, weights, k))
    model.set_ranking_terms(out["repeat_bonus"], out["count_weight"],
                            out["cold_count_weight"], out["cold_ties"])
    out["seconds"] = round(time.perf_counter() - began, 2)
    return out


def _choose_warm(model: ShopStreamModel, history: PurchaseHistory, window: WindowData,
                 candidates: list[str], matrix: torch.Tensor, pool: dict[str, int],
                 bonuses: tuple[float, ...], weights: tuple[float, ...], k: int
                 ) -> dict[str, Any]:
    """The (bonus, weight) pair with the best warm NDCG@k; {} without a warm user."""
    queries = rec_queries(history, window)
    n_warm = int(queries.is_warm.sum())
    if not n_warm:
        return {}
    targets = pool_positions(queries.targets, pool)
    query = pool_query(model, queries.user_ids, queries.query_items, history, candidates,
                       matrix, queries.exclusions())
    cold = model.cfg.cold_count_weight
    scored: dict[tuple[float, float], float] = {}
    for weight, bonus in itertools.product(sorted(set(weights)), sorted(set(bonuses))):
        model.set_ranking_terms(bonus, weight, cold)
        ranked = rank_query(model, query, k)
        scored[(weight, bonus)] = float(
            split_rec_metrics(ranked, targets, queries.is_warm, k)[f"warm/ndcg@{k}"])
    best = max(scored.values())
    weight, bonus = min(pair for pair, metric in scored.items() if metric >= best)
    return {"repeat_bonus": bonus, "count_weight": weight, "n_warm": n_warm,
            "warm_ndcg": {f"{b},{w}": v for (w, b), v in scored.items()}}


def _choose_cold(model: ShopStreamModel, history: PurchaseHistory, window: WindowData,
                 candidates: list[str], matrix: torch.Tensor, pool: dict[str, int],
                 weights: tuple[float, ...], k: int) -> dict[str, Any]:
    """The cold weight (the grid's or :data:`COLD_FALLBACK_WEIGHT`, the latter with either
    tie rule) with the best NDCG@k of the window's users ranked as cold (every user is cold
    against an empty history); :data:`COLD_FALLBACK_WEIGHT` with ``item_id`` ties, the
    popularity baseline's list, with too few."""
    queries = rec_queries(PurchaseHistory(model.cfg.history_len), window)
    n_users = len(queries.user_ids)
    out: dict[str, Any] = {"n_as_cold": n_users, "cold_count_weight": COLD_FALLBACK_WEIGHT,
                           "cold_ties": "item_id"}
    if n_users < MIN_COLD_USERS:
        return out
    targets = pool_positions(queries.targets, pool)
    query = pool_query(model, [AS_COLD] * n_users, queries.query_items, history, candidates,
                       matrix, queries.exclusions())
    cfg = model.cfg
    scored: dict[tuple[float, str], float] = {}
    # The popularity baseline's list (the fallback), and the same with the towers breaking
    # its ties, compete with the blends (where ties do not arise: "item_id" stands for any).
    options = [(w, "item_id") for w in sorted(set(weights) | {COLD_FALLBACK_WEIGHT})]
    for weight, ties in [*options, (COLD_FALLBACK_WEIGHT, "model")]:
        model.set_ranking_terms(cfg.repeat_bonus, cfg.count_weight, weight, ties)
        ranked = rank_query(model, query, k)
        scored[(weight, ties)] = float(
            split_rec_metrics(ranked, targets, queries.is_warm, k)[f"cold/ndcg@{k}"])
    best = max(scored.values())
    # Ties of the metric: the smaller weight, then the baseline's own tie rule.
    weight, ties = min((option for option, metric in scored.items() if metric >= best),
                       key=lambda option: (option[0], option[1] != "item_id"))
    out.update(cold_count_weight=weight, cold_ties=ties,
               cold_ndcg={cold_key(w, t): v for (w, t), v in scored.items()})
    return out


def cold_key(weight: float, ties: str) -> str:
    """The key of a cold option in the meta's ``cold_ndcg``: the weight, and ``/model``
    for the bound with the towers breaking ties."""
    return f"{weight}/model" if ties == "model" else str(weight)
