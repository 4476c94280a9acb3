"""Evaluate a model on the next window: recommendation (warm and cold users) and fraud.

Recommendation protocol (the same for the model and the baselines, on the same users):

* candidates: every item the model knows plus the next window's new catalogue items,
  which the model scores from their titles alone (cold-start items);
* warm users (bought before the window): query = their last ``history_len`` purchases,
  targets = the distinct items they buy in the window;
* cold users (never seen): query = their first basket in the window (its timestamp),
  targets = the distinct items they buy afterwards that are not in that basket. Since the
  basket's items can never be targets, every method ranks without them
  (:meth:`RecQueries.exclusions`), so no method spends its top-k slots on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from training.data.schema import WindowData
from training.evaluation.baselines import PopularityRecommender, RepeatThenPopular
from training.evaluation.fraud_metrics import fraud_metrics
from training.evaluation.metrics import per_user_ranking_metrics, top_k
from training.evaluation.rec_split import split_rec_metrics
from training.features.examples import FraudExamples, fraud_batch, fraud_examples
from training.features.history import PurchaseHistory, history_matrix, purchases
from training.model import ShopStreamModel
from training.model.ranking import id_ranks

SCORE_CHUNK = 1024


@dataclass
class RecQueries:
    """Users to rank for, with their query items and target items (as ids)."""

    user_ids: list[str]
    query_items: list[list[str]]
    targets: list[list[str]]
    is_warm: np.ndarray
    cold_baskets: pd.DataFrame

    def exclusions(self) -> list[list[str]]:
        """Per user, the items no method may rank: a cold user's query basket (by this
        protocol never a target); nothing for warm users, whose repeats are targets."""
        return [[] if warm else list(query)
                for warm, query in zip(self.is_warm, self.query_items)]


def rec_queries(history: PurchaseHistory, window: WindowData) -> RecQueries:
    bought = purchases(window.interactions)
    known = set(history.users())
    user_ids: list[str] = []
    queries: list[list[str]] = []
    targets: list[list[str]] = []
    warm: list[bool] = []
    baskets: list[pd.DataFrame] = []
    last = dict(zip(history.users(), history.last_items(history.users())))
    for user, rows in bought.groupby("user_id", sort=True):
        items = rows["item_id"].tolist()
        if user in known:
            query, target = last[user], list(dict.fromkeys(items))
        else:
            first = rows["ts"] == rows["ts"].min()
            baskets.append(rows[first])
            query = list(dict.fromkeys(rows.loc[first, "item_id"]))
            target = [i for i in dict.fromkeys(rows.loc[~first, "item_id"]) if i not in query]
        if target:
            user_ids.append(str(user))
            queries.append(query)
            targets.append(target)
            warm.append(user in known)
    cold = pd.concat(baskets, ignore_index=True) if baskets else bought.iloc[:0]
    return RecQueries(user_ids, queries, targets, np.asarray(warm, dtype=bool), cold)


def candidate_items(model: ShopStreamModel, window: WindowData) -> tuple[list[str], list[str]]:
    """(known item ids in index order, new item ids of the window) — the ranking pool."""
    known = model.items.ids
    seen = set(known)
    new = [i for i in dict.fromkeys(window.items["item_id"]) if i not in seen]
    return known, new


@torch.no_grad()
def candidate_matrix(model: ShopStreamModel, window: WindowData) -> tuple[list[str], torch.Tensor]:
    known, new = candidate_items(model, window)
    matrix = model.catalogue_matrix()[1:]
    if new:
        titles = dict(zip(window.items["item_id"], window.items["title"]))
        cold = model.item_vectors_from_titles([titles[i] for i in new])
        matrix = torch.cat([matrix, cold.to(matrix.device)])
    return known + new, matrix


def pool_positions(lists: list[list[str]], pos: dict[str, int]) -> list[np.ndarray]:
    """Each list's items as positions in the pool (``pos``: item id -> position; -1 = absent)."""
    return [np.asarray([pos.get(i, -1) for i in items], dtype=np.int64) for items in lists]


@dataclass
class PoolQuery:
    """What :meth:`ShopStreamModel.pool_scores` ranks users against a pool with, computed
    once: user vectors [U, dim], pool vectors [n, dim] and popularity [n, P], each user's
    own past items as pool positions [U, R] (-1 = none) with their features [U, R, F], and
    per user the pool positions never ranked (or None)."""

    user_vectors: torch.Tensor
    pool_vectors: torch.Tensor
    pool_pop: torch.Tensor
    rep_pos: torch.Tensor
    rep_feats: torch.Tensor
    skip: list[np.ndarray] | None
    # The pool's item-id order [n], the popularity baseline's tie rule (id_ranks).
    pool_rank: torch.Tensor | None = None


@torch.no_grad()
def pool_query(model: ShopStreamModel, user_ids: list[str], query_items: list[list[str]],
               history: PurchaseHistory, pool: list[str], matrix: torch.Tensor,
               exclude: list[list[str]] | None = None) -> PoolQuery:
    """The inputs of :func:`rank_query`: two towers over the query items, the pool's
    popularity and each user's own past items, all as of ``history``'s snapshot.
    ``exclude[i]`` lists item ids never ranked for user i."""
    model.eval()
    device = next(model.parameters()).device
    users = model.users.lookup(np.asarray(user_ids, dtype=object))
    hist = history_matrix([list(model.items.lookup(np.asarray(q, dtype=object)))
                           for q in query_items], model.cfg.history_len)
    index = pd.Index(pool, dtype=object)

    def position(ids: np.ndarray) -> np.ndarray:
        return index.get_indexer(np.asarray(ids, dtype=object)).astype(np.int64) + 1

    def pool_at(ids: list[str]) -> np.ndarray:
        at = position(np.asarray(ids, dtype=object)) - 1
        return at[at >= 0]

    rep = history.profile.repeat_features(user_ids, model.cfg.repeat_items, position)
    vectors = [model.user_vectors(torch.from_numpy(users[start:start + SCORE_CHUNK]).to(device),
                                  torch.from_numpy(hist[start:start + SCORE_CHUNK]).to(device))
               for start in range(0, len(users), SCORE_CHUNK)]
    return PoolQuery(
        torch.cat(vectors) if vectors else torch.zeros(0, model.cfg.dim, device=device),
        matrix.to(device), torch.from_numpy(history.profile.item_popularity(pool)).to(device),
        torch.from_numpy(rep.items - 1).to(device), torch.from_numpy(rep.features).to(device),
        None if exclude is None else [pool_at(items) for items in exclude],
        id_ranks(pool).to(device))


@torch.no_grad()
def rank_query(model: ShopStreamModel, query: PoolQuery, k: int) -> np.ndarray:
    """Top-k pool positions [users, k] by :meth:`ShopStreamModel.pool_scores` — the one
    ranking rule, shared with serving — with the model's current ranking-time terms."""
    out = []
    n_pool = len(query.pool_vectors)
    for start in range(0, len(query.user_vectors), SCORE_CHUNK):
        sl = slice(start, start + SCORE_CHUNK)
        scores = model.pool_scores(query.user_vectors[sl], query.pool_vectors, query.pool_pop,
                                   query.rep_pos[sl], query.rep_feats[sl], query.pool_rank)
        skip = None if query.skip is None else query.skip[sl]
        out.append(top_k(scores.cpu().numpy(), min(k, n_pool), skip))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


@torch.no_grad()
def rank_pool(model: ShopStreamModel, user_ids: list[str], query_items: list[list[str]],
              history: PurchaseHistory, pool: list[str], matrix: torch.Tensor,
              k: int, exclude: list[list[str]] | None = None) -> np.ndarray:
    """Top-k pool positions [users, k]: :func:`rank_query` of :func:`pool_query`."""
    return rank_query(model, pool_query(model, user_ids, query_items, history, pool, matrix,
                                        exclude), k)


@torch.no_grad()
def model_rankings(model: ShopStreamModel, queries: RecQueries, history: PurchaseHistory,
                   candidates: list[str], matrix: torch.Tensor, k: int) -> np.ndarray:
    """:func:`rank_pool` for the users of ``queries``."""
    return rank_pool(model, queries.user_ids, queries.query_items, history, candidates,
                     matrix, k, queries.exclusions())


def _split_metrics(ranked: np.ndarray, targets: list[np.ndarray], warm: np.ndarray,
                   k: int) -> dict[str, float]:
    """all/warm/cold means of :func:`training.evaluation.rec_split.split_rec_metrics`."""
    return split_rec_metrics(ranked, targets, warm, k)


def evaluate_rec(model: ShopStreamModel, history: PurchaseHistory, train_interactions:
                 pd.DataFrame, window: WindowData, k: int = 20) -> dict[str, dict[str, float]]:
    """Recall/NDCG/HitRate@k of the model and of the two baselines on the same users."""
    return evaluate_rec_by_user(model, history, train_interactions, window, k)[0]


def evaluate_rec_by_user(model: ShopStreamModel, history: PurchaseHistory,
                         train_interactions: pd.DataFrame, window: WindowData, k: int = 20
                         ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """:func:`evaluate_rec`, and each user's NDCG@k by the model keyed by user id (the
    users behind ``all/ndcg@k``), from one ranking: for paired comparisons of two models
    on the same users."""
    queries = rec_queries(history, window)
    candidates, matrix = candidate_matrix(model, window)
    pos = {item: i for i, item in enumerate(candidates)}
    targets = pool_positions(queries.targets, pos)
    ranked = model_rankings(model, queries, history, candidates, matrix, k)
    results = {"model": _split_metrics(ranked, targets, queries.is_warm, k)}
    per_user = per_user_ranking_metrics(ranked, targets, k)
    user_ndcg = {queries.user_ids[u]: float(v)
                 for u, v in zip(per_user.users.tolist(), per_user.ndcg)}
    popular = PopularityRecommender().fit(train_interactions)
    # Repeat-then-popular may see exactly what the model sees: cold users' first baskets.
    seen = pd.concat([train_interactions[["user_id", "item_id", "event", "ts"]],
                      queries.cold_baskets.assign(event="purchase")], ignore_index=True)
    repeat = RepeatThenPopular().fit(seen)
    for name, recommender in (("popularity", popular), ("repeat_then_popular", repeat)):
        recs = recommender.recommend(queries.user_ids, k, queries.exclusions())
        ranked = np.asarray([np.pad(p, (0, k - len(p)), constant_values=-1)[:k]
                             for p in pool_positions(recs, pos)], dtype=np.int64).reshape(-1, k)
        results[name] = _split_metrics(ranked, targets, queries.is_warm, k)
    return results, user_ndcg


@torch.no_grad()
def fraud_scores(model: ShopStreamModel, examples: FraudExamples) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), 4096):
        batch = fraud_batch(examples, np.arange(start, min(start + 4096, len(examples))))
        out.append(model.fraud_probability(batch.to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def fraud_labels_scores(model: ShopStreamModel, history: PurchaseHistory,
                        window: WindowData) -> tuple[np.ndarray, np.ndarray]:
    """(labels, fraud probabilities) of ``window``'s labelled transactions, in table order."""
    examples = fraud_examples(model, window.transactions, history)
    return examples.label.astype(bool), fraud_scores(model, examples)


def evaluate_fraud(model: ShopStreamModel, history: PurchaseHistory,
                   window: WindowData) -> dict[str, float]:
    labels, scores = fraud_labels_scores(model, history, window)
    if len(labels) == 0:
        return {"n": 0}
    return {k: float(v) for k, v in fraud_metrics(labels, scores).items()}
