"""Score every method on one window, on exactly the same users, targets and ranking pool.

The pipeline is prequential (test-then-train): when window ``t`` lands, each method's
current model is scored on it *before* anything trains on it. A :class:`WindowContext`
fixes what every method sees for window ``t``:

* history: purchases before the window (warm users' queries, as in
  ``training.evaluation.evaluate``);
* ranking pool: every item of windows ``0..t`` in order of first appearance, so the pool of
  an earlier window is a prefix of a later one's (forgetting re-scores earlier windows with
  the same pool they were first scored with). A model scores items it knows by their
  trained vectors and the others from their titles (cold start);
* baselines: popularity of the previous window, repeat-then-popular over all earlier
  purchases (plus cold users' first baskets, which the model sees too), and
  ``HistGradientBoostingClassifier(l2_regularization=1.0)`` on the fraud features.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from training.data.schema import WindowData
from training.evaluation.baselines import PopularityRecommender, RepeatThenPopular
from training.evaluation.evaluate import (
    RecQueries,
    fraud_labels_scores,
    model_rankings,
    rec_queries,
)
from training.evaluation.fraud_metrics import fraud_metrics
from training.evaluation.metrics import PerUserRanking
from training.evaluation.rec_split import split_rec_per_user
from training.features.history import PurchaseHistory, purchases
from training.model import ShopStreamModel

logger = logging.getLogger(__name__)

REC_BASELINES = ("popularity", "repeat_then_popular")
FRAUD_BASELINE = "hist_gradient_boosting"


@dataclass
class WindowContext:
    """What every method is scored with on one window (fixed when the window lands)."""

    window: WindowData
    # The purchase history as of the window's start, for the window's own users (the only
    # ones it scores): a whole snapshot per window would grow with the square of the
    # number of windows (a year of weekly windows held ~1 GB of them).
    history: PurchaseHistory
    previous: pd.DataFrame
    # Every earlier window's interactions, shared with the other contexts (not copied):
    # repeat-then-popular fits on them.
    earlier: tuple[pd.DataFrame, ...]
    pool: list[str]
    titles: dict[str, str]
    queries: RecQueries
    targets: list[np.ndarray]
    # repeat[u][j]: user u bought targets[u][j] in an earlier window (all of them, not just the
    # last history_len purchases the history keeps); empty = unknown, no repeat/new split.
    repeat: list[np.ndarray] = field(default_factory=list)


def _bought_before(bought: dict[str, set[str]], user: str, items: list[str]) -> np.ndarray:
    before = bought.get(user, set())
    return np.asarray([i in before for i in items], dtype=bool)


def _add_purchases(bought: dict[str, set[str]], interactions: pd.DataFrame) -> None:
    rows = purchases(interactions)
    for user, item in zip(rows["user_id"].astype(str), rows["item_id"].astype(str)):
        bought.setdefault(user, set()).add(item)


def window_users(window: WindowData) -> set[str]:
    """Every user id of ``window``'s interactions and transactions, as text."""
    ids = [window.interactions["user_id"], window.transactions.get("user_id")]
    return {str(u) for col in ids if col is not None for u in col.dropna().unique()}


def build_contexts(windows: list[WindowData], history_len: int) -> list[WindowContext]:
    """One context per window, oldest first (cheap: no model involved)."""
    contexts: list[WindowContext] = []
    history = PurchaseHistory(history_len)
    pool: list[str] = []
    known: set[str] = set()
    titles: dict[str, str] = {}
    earlier: list[pd.DataFrame] = []
    bought: dict[str, set[str]] = {}
    previous = windows[0].interactions.iloc[:0]
    for window in windows:
        for item, title in zip(window.items["item_id"], window.items["title"]):
            titles[str(item)] = str(title)
            if item not in known:
                known.add(item)
                pool.append(str(item))
        queries = rec_queries(history, window)
        pos = {item: i for i, item in enumerate(pool)}
        # An item no items table listed cannot be ranked by anyone: not a target.
        targets = [np.asarray([pos[i] for i in t if i in pos], dtype=np.int64)
                   for t in queries.targets]
        repeat = [_bought_before(bought, u, [i for i in t if i in pos])
                  for u, t in zip(queries.user_ids, queries.targets)]
        contexts.append(WindowContext(window, history.of_users(window_users(window)),
                                      previous, tuple(earlier), list(pool), dict(titles),
                                      queries, targets, repeat))
        history = history.update(window.interactions)
        _add_purchases(bought, window.interactions)
        earlier.append(window.interactions)
        previous = window.interactions
    return contexts


def has_rec(window: WindowData) -> bool:
    return bool(len(purchases(window.interactions)))


def has_fraud(window: WindowData) -> bool:
    txns = window.transactions
    return bool(len(txns)) and bool(txns["is_fraud"].notna().any())


@torch.no_grad()
def pool_matrix(model: ShopStreamModel, pool: list[str], titles: dict[str, str]
                ) -> torch.Tensor:
    """Item vectors [len(pool), dim]: trained vectors for known ids, title vectors else."""
    model.eval()
    idx = model.items.lookup(np.asarray(pool, dtype=object))
    known = idx > 0
    catalogue = model.catalogue_matrix()
    out = torch.zeros(len(pool), catalogue.shape[1], device=catalogue.device)
    out[torch.from_numpy(known)] = catalogue[torch.from_numpy(idx[known])]
    missing = np.flatnonzero(~known)
    if len(missing):
        vectors = model.item_vectors_from_titles([titles.get(pool[i], "") for i in missing])
        out[torch.from_numpy(missing)] = vectors.to(out.device)
    return out


class RecRow(dict[str, float]):
    """A rec metrics row (what the results store) that also carries, in memory only, the
    per-user values behind it: ``per_user[part]`` for the parts of
    :func:`training.evaluation.rec_split.split_rec_per_user`, users indexing ``ctx.queries``
    rows, the
    same users for every method scored on the same context (so they can be paired)."""

    per_user: dict[str, PerUserRanking]


REC_PARTS = ("warm", "cold", "warm_repeat", "warm_new")


def _rec_row(ranked: np.ndarray, ctx: WindowContext, k: int) -> RecRow:
    """The report's rec metrics of ``ranked`` (rows = ``ctx.queries``) on ``ctx``'s targets:
    all users, warm/cold users and warm users' repeat/new-to-user targets."""
    repeat = ctx.repeat if len(ctx.repeat) == len(ctx.targets) else None
    parts = split_rec_per_user(ranked, ctx.targets, ctx.queries.is_warm, k, repeat)
    means = {name: part.means() for name, part in parts.items()}
    row = RecRow({f"{name}@{k}": float(means["all"][f"{name}@{k}"])
                  for name in ("ndcg", "recall", "hitrate")})
    row.update({f"{part}/{name}@{k}": float(means[part][f"{name}@{k}"])
                for part in REC_PARTS if part in means for name in ("ndcg", "recall")})
    row["n_users"] = float(means["all"]["n_users"])
    row.update({f"{part}/n_users": float(means[part]["n_users"])
                for part in REC_PARTS if part in means})
    row.per_user = parts
    return row


def model_rec(model: ShopStreamModel, ctx: WindowContext, matrix: torch.Tensor,
              k: int) -> dict[str, float]:
    """Rec metrics of a model on ``ctx`` with ``matrix`` (a pool matrix; only the prefix
    covering ``ctx.pool`` is used)."""
    part = matrix[:len(ctx.pool)]
    ranked = model_rankings(model, ctx.queries, ctx.history, ctx.pool, part, k)
    if ranked.shape[1] < k:  # a pool smaller than k: pad like the baselines' lists
        pad = np.full((ranked.shape[0], k - ranked.shape[1]), -1, dtype=np.int64)
        ranked = np.concatenate([ranked, pad], axis=1)
    return _rec_row(ranked, ctx, k)


def baseline_rec(ctx: WindowContext, k: int) -> dict[str, tuple[dict[str, float], float]]:
    """{name: (metrics, fit seconds)} of popularity (previous window) and
    repeat-then-popular, on the same users and targets as the models."""
    pos = {item: i for i, item in enumerate(ctx.pool)}
    cold = ctx.queries.cold_baskets.assign(event="purchase")
    columns = ["user_id", "item_id", "event", "ts"]
    parts = [part[columns] for part in ctx.earlier if len(part)]
    seen = pd.concat([*parts, cold[columns]], ignore_index=True) if parts else cold[columns]
    out: dict[str, tuple[dict[str, float], float]] = {}
    for name, factory, data in (("popularity", PopularityRecommender, ctx.previous),
                                ("repeat_then_popular", RepeatThenPopular, seen)):
        began = time.perf_counter()
        recommender = factory().fit(data)
        seconds = time.perf_counter() - began
        recs = recommender.recommend(ctx.queries.user_ids, k, ctx.queries.exclusions())
        ranked = np.asarray([[pos.get(i, -1) for i in r[:k]] + [-1] * (k - len(r[:k]))
                             for r in recs], dtype=np.int64).reshape(-1, k)
        out[name] = (_rec_row(ranked, ctx, k), seconds)
    return out


class FraudRow(dict[str, float]):
    """A fraud metrics row (what the results store) that also carries, in memory only, the
    labels and scores behind it: the window's labelled transactions in table order, the same
    rows for every method (``cluster.comparison.fraud_intervals`` pools them)."""

    labels: np.ndarray
    scores: np.ndarray


def fraud_row(labels: np.ndarray, scores: np.ndarray) -> FraudRow:
    row = FraudRow({key: float(value) for key, value in fraud_metrics(labels, scores).items()})
    row.labels, row.scores = labels, np.asarray(scores, dtype=np.float64)
    return row


def model_fraud(model: ShopStreamModel, ctx: WindowContext) -> dict[str, float]:
    labels, scores = fraud_labels_scores(model, ctx.history, ctx.window)
    if len(labels) == 0:
        return {"n": 0.0}
    return fraud_row(labels, scores)


class GradientBoostingFraud:
    """The non-neural fraud baseline: HistGradientBoosting on amount + the numeric features.

    ``l2_regularization=1.0``: with the defaults it overfits this kind of data and
    early-stops after a few rounds, which would make a weak baseline look like a win.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.model: HistGradientBoostingClassifier | None = None
        self.columns: list[str] = []

    @staticmethod
    def _labelled(txns: pd.DataFrame) -> pd.DataFrame:
        return txns[txns["is_fraud"].notna()]

    def fit(self, transactions: pd.DataFrame, features: list[str]) -> float:
        """Fit on every labelled transaction so far; returns the seconds it took."""
        began = time.perf_counter()
        rows = self._labelled(transactions)
        self.columns = ["amount", *features]
        labels = rows["is_fraud"].astype(bool).to_numpy()
        if len(rows) == 0 or labels.all() or not labels.any():
            self.model = None  # one class only: nothing to learn
            return time.perf_counter() - began
        self.model = HistGradientBoostingClassifier(l2_regularization=1.0,
                                                    random_state=self.seed)
        self.model.fit(rows[self.columns].to_numpy(dtype=np.float64), labels)
        return time.perf_counter() - began

    def labels_scores(self, window: WindowData) -> tuple[np.ndarray, np.ndarray]:
        """(labels, fraud probabilities) of ``window``'s labelled transactions."""
        rows = self._labelled(window.transactions)
        if len(rows) == 0 or self.model is None:
            # No labels of both classes yet (the first windows under --label-delay): the
            # shop has no fraud model, and a constant score ranks nothing (AP = prevalence).
            scores = np.zeros(len(rows))
        else:
            scores = self.model.predict_proba(
                rows[self.columns].to_numpy(dtype=np.float64))[:, 1]
        return rows["is_fraud"].astype(bool).to_numpy(), scores

    def evaluate(self, window: WindowData) -> dict[str, float]:
        labels, scores = self.labels_scores(window)
        if len(labels) == 0:
            return {"auc_pr": math.nan, "roc_auc": math.nan, "n": 0.0}
        return fraud_row(labels, scores)


def evaluate_models(models: dict[str, ShopStreamModel], ctx: WindowContext, k: int,
                    tasks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{method: {task: metrics}} of the neural methods on ``ctx``."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        row: dict[str, Any] = {}
        if "rec" in tasks:
            row["rec"] = model_rec(model, ctx, pool_matrix(model, ctx.pool, ctx.titles), k)
        if "fraud" in tasks:
            row["fraud"] = model_fraud(model, ctx)
        out[name] = row
    return out


def forgetting_row(model: ShopStreamModel, contexts: list[WindowContext], k: int,
                   tasks: dict[str, str]) -> dict[str, dict[str, float]]:
    """Main metric of one version on each of ``contexts`` (earlier windows and the last)."""
    matrix = pool_matrix(model, contexts[-1].pool, contexts[-1].titles) \
        if "rec" in tasks else None
    out: dict[str, dict[str, float]] = {}
    for ctx in contexts:
        row: dict[str, float] = {}
        if matrix is not None:
            row["rec"] = model_rec(model, ctx, matrix, k)[tasks["rec"]]
        if "fraud" in tasks:
            row["fraud"] = model_fraud(model, ctx).get(tasks["fraud"], math.nan)
        out[ctx.window.window_id] = row
    return out
