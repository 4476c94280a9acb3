"""Choose the two ranking-time terms of a candidate on its held-out tail.

Retail baskets are mostly repeat purchases, and repeat-then-popular ("the user's own items,
most bought first, then the popular ones") is a hard bar. The model has a learned repeat
term, but with few optimizer steps per update (small windows) it cannot learn how far above
new items a user's own items belong, nor how to order them; putting that margin into the
training loss as a fixed prior saturates the softmax and teaches the repeat term the wrong
sign (see docs/continual_learning.md, section 3). So repeat-then-popular's signals join the
score at ranking time only, outside the loss, as a held-out-validated blend:

* ``repeat_bonus``: a constant on the user's own past items (large: own items first);
* ``count_weight``: a weight on the user's own purchase count of each own item and on
  every item's purchase count in the last update (large: repeat-then-popular's order).

Each update scores every pair of the two grids on its held-out tail and keeps the pair
with the best warm-user NDCG@k (ties: the smaller weight, then the smaller bonus, so the
model's own order stays unless held-out rows ask otherwise). Cold users have no own items
and the count term moves every item by its popularity only. The values travel with the
version (``ModelConfig``), so evaluation and serving rank with them alike.

The held-out tail is also the gate's slice, so the candidate's gate score is its best over
the grid: a small optimistic bias of the gate, accepted because the tail is the only data
of the new window the candidate has not trained on.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from training.data.schema import WindowData
from training.evaluate import (
    candidate_matrix,
    pool_positions,
    pool_query,
    rank_query,
    rec_queries,
)
from training.history import PurchaseHistory
from training.model import ShopStreamModel
from training.rec_split import split_rec_metrics


def choose_ranking_terms(model: ShopStreamModel, history: PurchaseHistory, window: WindowData,
                         bonuses: tuple[float, ...], weights: tuple[float, ...], k: int
                         ) -> dict[str, Any]:
    """Set ``model``'s ranking terms to the grid pair with the best warm NDCG@k on
    ``window`` (ranked against ``history``). Returns {"repeat_bonus", "count_weight",
    "previous": [bonus, weight], "warm_ndcg": {"bonus,weight": metric}, "n_warm"}; keeps the
    model's terms when a grid is empty or the window has no warm user."""
    previous = (model.cfg.repeat_bonus, model.cfg.count_weight)
    out: dict[str, Any] = {"repeat_bonus": previous[0], "count_weight": previous[1],
                           "previous": list(previous), "warm_ndcg": {}, "n_warm": 0}
    if not bonuses or not weights or not len(window.interactions):
        return out
    queries = rec_queries(history, window)
    out["n_warm"] = int(queries.is_warm.sum())
    if not out["n_warm"]:
        return out
    began = time.perf_counter()
    model.eval()
    candidates, matrix = candidate_matrix(model, window)
    targets = pool_positions(queries.targets, {item: i for i, item in enumerate(candidates)})
    query = pool_query(model, queries.user_ids, queries.query_items, history, candidates,
                       matrix, queries.exclusions())
    scored: dict[tuple[float, float], float] = {}
    for weight, bonus in itertools.product(sorted(set(weights)), sorted(set(bonuses))):
        model.set_ranking_terms(bonus, weight)
        ranked = rank_query(model, query, k)
        scored[(weight, bonus)] = float(
            split_rec_metrics(ranked, targets, queries.is_warm, k)[f"warm/ndcg@{k}"])
    best = max(scored.values())
    weight, bonus = min(pair for pair, metric in scored.items() if metric >= best)
    model.set_ranking_terms(bonus, weight)
    out.update(repeat_bonus=bonus, count_weight=weight,
               warm_ndcg={f"{b},{w}": v for (w, b), v in scored.items()},
               seconds=round(time.perf_counter() - began, 2))
    return out
