"""Evaluation metrics for both tasks: top-k ranking (recommendation) and fraud scoring.

numpy only, vectorised over users / rows. Item indices are non-negative ints; ``-1`` in a
ranked list means "no item" (padding, e.g. when exclusions leave fewer than k items) and
never counts as a hit.

Ranking (binary relevance, averaged over users whose target set is non-empty):

* ``recall@k  = |top-k ∩ T| / |T|`` (the standard definition: it is below 1 whenever
  ``|T| > k``, unlike the ``min(|T|, k)`` variant).
* ``ndcg@k    = DCG / IDCG`` with ``DCG = sum over hits at 0-based rank r of 1 / log2(r + 2)``
  and IDCG the DCG of ``min(|T|, k)`` hits at ranks ``0..min(|T|, k) - 1``.
* ``hitrate@k = 1`` if any of the top k is in T, else 0.

Fraud (label 1 = fraud, a higher score = more suspicious):

* ``average_precision``: sklearn's ``average_precision_score`` semantics,
  ``sum_n (R_n - R_{n-1}) P_n`` over thresholds at the distinct score values.
* ``roc_auc``: Mann-Whitney U with average ranks for tied scores (a tied pair counts 1/2).
* ``recall_at_fpr``: the largest recall over thresholds at distinct score values
  (flag when ``score >= threshold``) whose false-positive rate is ``<= max_fpr``.

Intervals: :func:`per_user_ranking_metrics` gives the per-user values behind
:func:`ranking_metrics`; :func:`bootstrap_ci` and :func:`paired_bootstrap_diff` turn them into
percentile-bootstrap intervals of a mean and of a paired difference of means over users.

Degenerate fraud input returns NaN for each metric it leaves undefined instead of raising:
no positives -> AP, ROC-AUC and recall@fpr are NaN; no negatives -> ROC-AUC and recall@fpr
are NaN (AP stays defined). Malformed input (non-finite scores, labels outside {0, 1},
mismatched shapes) raises :class:`MetricInputError` naming the argument.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# Per-user index sets: arrays, lists or sets of item indices.
IndexSets = Sequence[np.ndarray | Iterable[int]]


class MetricInputError(ValueError):
    """An argument to a metric is malformed; the message names the argument."""


# --------------------------------------------------------------------------- ranking


def _flatten_index_sets(sets: IndexSets, name: str, n_rows: int,
                        n_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of ``sets``, de-duplicated per row, validated against the bounds."""
    if len(sets) != n_rows:
        raise MetricInputError(f"{name}: expected {n_rows} entries (one per row), got {len(sets)}")
    parts: list[np.ndarray] = []
    for entry in sets:
        values = entry if isinstance(entry, np.ndarray) else list(entry)
        arr = np.asarray(values)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise MetricInputError(f"{name}: item indices must be integers, got {arr.dtype}")
        parts.append(np.unique(arr.astype(np.int64).ravel()))
    sizes = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), sizes)
    cols = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if cols.size and cols.min() < 0:
        raise MetricInputError(f"{name}: item indices must be >= 0, got {int(cols.min())}")
    if n_items is not None and cols.size and cols.max() >= n_items:
        raise MetricInputError(
            f"{name}: item index {int(cols.max())} out of range for {n_items} items")
    return rows, cols


def _check_ranked(ranked: npt.ArrayLike, k: int) -> np.ndarray:
    """The first k columns of ``ranked`` as int64, rejecting repeated items within a row."""
    arr = np.asarray(ranked)
    if arr.ndim != 2:
        raise MetricInputError(f"ranked: expected a 2-D (users, k) array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise MetricInputError(f"ranked: item indices must be integers, got {arr.dtype}")
    if arr.shape[1] < k:
        raise MetricInputError(f"ranked: has {arr.shape[1]} columns, fewer than k={k}")
    arr = arr[:, :k].astype(np.int64)
    srt = np.sort(arr, axis=1)
    if ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any():
        raise MetricInputError("ranked: a row lists the same item more than once")
    return arr


def _hit_matrix(ranked: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Boolean (users, k): ranked[u, r] is in user u's target set."""
    n_users = ranked.shape[0]
    stride = int(max(int(cols.max(initial=-1)), int(ranked.max(initial=-1)))) + 1
    if n_users * stride >= 2**62:
        raise MetricInputError("ranked: item indices too large to encode (user, item) pairs")
    user_col = np.arange(n_users, dtype=np.int64)[:, None]
    ranked_keys = np.where(ranked >= 0, user_col * stride + ranked, -1)
    target_keys = rows * stride + cols
    return np.isin(ranked_keys, target_keys)


@dataclass(frozen=True)
class PerUserRanking:
    """Per-user ranking metrics of the rows of ``ranked`` whose target set is non-empty.

    ``users`` holds those rows' indices (ascending); ``recall``, ``ndcg`` and ``hitrate`` are
    aligned with it. :meth:`means` is exactly :func:`ranking_metrics` (it is computed from it).
    """

    k: int
    users: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    hitrate: np.ndarray
    n_rows: int

    def means(self) -> dict[str, float]:
        """``recall@k``, ``ndcg@k``, ``hitrate@k`` averaged over users, ``n_users``,
        ``n_skipped`` (rows with an empty target set); NaN metrics when no user is left."""
        n_users = int(self.users.size)
        out: dict[str, float] = {"n_users": n_users, "n_skipped": self.n_rows - n_users}
        names = (f"recall@{self.k}", f"ndcg@{self.k}", f"hitrate@{self.k}")
        if n_users == 0:
            return {**dict.fromkeys(names, float("nan")), **out}
        values = (self.recall, self.ndcg, self.hitrate)
        return {**{n: float(np.mean(v)) for n, v in zip(names, values)}, **out}


def per_user_ranking_metrics(ranked: npt.ArrayLike, targets: IndexSets,
                             k: int = 20) -> PerUserRanking:
    """Recall@k, NDCG@k and hit rate@k of each user of ``ranked`` with a non-empty target set.

    Same inputs and definitions as :func:`ranking_metrics`, whose values are the means of
    these arrays; use them for intervals (:func:`bootstrap_ci`) or paired comparisons of two
    methods on the same users (:func:`paired_bootstrap_diff`).
    """
    if k < 1:
        raise MetricInputError(f"k: must be >= 1, got {k}")
    arr = _check_ranked(ranked, k)
    rows, cols = _flatten_index_sets(targets, "targets", n_rows=arr.shape[0])
    sizes = np.bincount(rows, minlength=arr.shape[0])
    keep = sizes > 0
    hits = _hit_matrix(arr, rows, cols)[keep]
    sizes = sizes[keep]
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    n_hits = hits.sum(axis=1)
    dcg = hits.astype(np.float64) @ discounts
    idcg = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    return PerUserRanking(k=k, users=np.flatnonzero(keep), recall=n_hits / sizes,
                          ndcg=dcg / idcg, hitrate=(n_hits > 0).astype(np.float64),
                          n_rows=int(arr.shape[0]))


def ranking_metrics(ranked: npt.ArrayLike, targets: IndexSets, k: int = 20) -> dict[str, float]:
    """Recall@k, NDCG@k and hit rate@k of ``ranked`` against ``targets``, averaged over users.

    ``ranked`` is (U, >=k) item indices, best first (only the first k columns are used; -1 pads);
    ``targets[u]`` is user u's held-out item set (array, list or set). Definitions are in the
    module docstring; recall divides by ``|T|``, not ``min(|T|, k)``. Users with an empty target
    set are skipped and counted in ``n_skipped``; ``n_users`` counts the users averaged over.
    With no user left, the three metrics are NaN. Per-user values:
    :func:`per_user_ranking_metrics`.

    Returns keys ``recall@{k}``, ``ndcg@{k}``, ``hitrate@{k}``, ``n_users``, ``n_skipped``.
    """
    return per_user_ranking_metrics(ranked, targets, k).means()


def _first_true(mask: np.ndarray, need: np.ndarray, block: int = 1024) -> np.ndarray:
    """The first ``need[r]`` True cells of each row of ``mask``, as a mask.

    Scans column blocks and drops satisfied rows, so dense ties (e.g. all-zero scores) stop
    after the first block instead of touching every cell several times.
    """
    out = np.zeros_like(mask)
    found = np.zeros(mask.shape[0], dtype=np.int64)
    for start in range(0, mask.shape[1], block):
        todo = np.nonzero(found < need)[0]
        if todo.size == 0:
            break
        part = mask[todo, start:start + block]
        rank = np.cumsum(part, axis=1) + found[todo, None]
        out[todo, start:start + block] = part & (rank <= need[todo, None])
        found[todo] += part.sum(axis=1)
    return out


def _resolve_ties(eq: np.ndarray, valid: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Of the items tied at the threshold, the ``need`` per row to keep: allowed items before
    excluded ones (only tied when the threshold is -inf), then lower index first."""
    take = _first_true(eq & valid, need)
    rest = need - take.sum(axis=1)
    if rest.any():
        take |= _first_true(eq & ~valid, rest)
    return take


def top_k(scores: npt.ArrayLike, k: int, exclude: IndexSets | None = None) -> np.ndarray:
    """The k best item indices per row of ``scores`` (U, n), best first, as int64 (U, k).

    ``exclude[u]`` lists item indices never returned for row u (e.g. the padding index 0 and
    items the user already bought). Ties are broken deterministically by the lower index.
    Where fewer than k items remain (``k > n`` or exclusions), the row is padded with -1 at
    the end. Scores may be +/-inf; NaN raises :class:`MetricInputError`.

    Uses ``argpartition`` to find each row's k-th best score, so the cost is O(U * n) rather
    than a full sort; only the k selected items are sorted.
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    if s.ndim != 2:
        raise MetricInputError(f"scores: expected a 2-D (users, items) array, got shape {s.shape}")
    if np.isnan(s).any():
        raise MetricInputError(f"scores: {int(np.isnan(s).sum())} NaN value(s)")
    if k < 1:
        raise MetricInputError(f"k: must be >= 1, got {k}")
    n_rows, n_items = s.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    kk = min(k, n_items)
    if kk == 0 or n_rows == 0:
        return out
    valid = np.ones(s.shape, dtype=bool)
    if exclude is not None:
        rows, cols = _flatten_index_sets(exclude, "exclude", n_rows, n_items=n_items)
        valid[rows, cols] = False
        s[~valid] = -np.inf
    kth = np.argpartition(s, n_items - kk, axis=1)[:, n_items - kk]  # the kk-th largest
    thr = s[np.arange(n_rows), kth][:, None]
    above = s > thr
    eq = s == thr
    take = above | eq
    over = take.sum(axis=1) > kk
    if over.any():
        need = kk - above[over].sum(axis=1)
        take[over] = above[over] | _resolve_ties(eq[over], valid[over], need)
    idx = np.nonzero(take)[1].reshape(n_rows, kk)  # row-major, so ascending within a row
    vals = np.take_along_axis(s, idx, axis=1)
    ok = np.take_along_axis(valid, idx, axis=1)
    order = np.lexsort((idx, -vals, ~ok), axis=-1)
    best = np.take_along_axis(idx, order, axis=1)
    best[~np.take_along_axis(ok, order, axis=1)] = -1
    out[:, :kk] = best
    return out


# --------------------------------------------------------------------------- fraud


def _check_binary(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(labels as bool, scores as float64), both 1-D and the same length."""
    try:
        y = np.asarray(y_true, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"y_true: labels must be 0/1 or bool ({exc})") from exc
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"scores: must be numeric ({exc})") from exc
    if y.ndim != 1:
        raise MetricInputError(f"y_true: expected a 1-D array, got shape {y.shape}")
    if s.ndim != 1:
        raise MetricInputError(f"scores: expected a 1-D array, got shape {s.shape}")
    if y.shape != s.shape:
        raise MetricInputError(f"y_true/scores: lengths differ ({y.size} vs {s.size})")
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        raise MetricInputError(f"y_true: {int(bad.sum())} label(s) not in {{0, 1}} (NaN or other)")
    finite = np.isfinite(s)
    if not finite.all():
        raise MetricInputError(f"scores: {int((~finite).sum())} non-finite value(s)")
    return y.astype(bool), s


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, false positives, threshold) for ``score >= threshold`` at each
    distinct score value, highest threshold first."""
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[last]
    fps = last + 1 - tps
    return tps, fps, s_sorted[last]


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    tps, fps, _ = _curve(y, s)
    return _curve_average_precision(tps, fps, n_pos)


def _curve_average_precision(tps: np.ndarray, fps: np.ndarray, n_pos: int) -> float:
    precision = tps / (tps + fps)
    recall_step = np.diff(tps, prepend=0) / n_pos
    return float(np.sum(recall_step * precision))


def _roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    tps, fps, _ = _curve(y, s)
    return _curve_roc_auc(tps, fps, n_pos, n_neg)


def _curve_roc_auc(tps: np.ndarray, fps: np.ndarray, n_pos: int, n_neg: int) -> float:
    """Mann-Whitney U / (n_pos n_neg), ties counted 1/2: twice U is the trapezoid area under
    the integer (fps, tps) steps of the tie-grouped curve, summed exactly in int64, so the
    result is the same single rounding of U / (n_pos n_neg) as the average-rank formula."""
    tp = np.concatenate(([0], tps)).astype(np.int64)
    fp = np.concatenate(([0], fps)).astype(np.int64)
    twice_u = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))
    return twice_u / (2 * n_pos * n_neg)


def _check_max_fpr(max_fpr: float) -> None:
    if not (np.isfinite(max_fpr) and 0.0 <= max_fpr <= 1.0):
        raise MetricInputError(f"max_fpr: must be in [0, 1], got {max_fpr}")


def _feasible_last(y: np.ndarray, s: np.ndarray, max_fpr: float) -> tuple[int, np.ndarray,
                                                                           np.ndarray]:
    """Index of the lowest threshold with FPR <= max_fpr (-1 if none), tps, thresholds."""
    tps, fps, thresholds = _curve(y, s)
    return _curve_feasible_last(fps, y.size - int(y.sum()), max_fpr), tps, thresholds


def _curve_feasible_last(fps: np.ndarray, n_neg: int, max_fpr: float) -> int:
    return int(np.count_nonzero(fps / n_neg <= max_fpr)) - 1  # fps rises, so a prefix


def _recall_at_fpr(y: np.ndarray, s: np.ndarray, max_fpr: float) -> float:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    last, tps, _ = _feasible_last(y, s, max_fpr)
    return 0.0 if last < 0 else float(tps[last]) / n_pos


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision (area under the PR curve, step-wise as sklearn's
    ``average_precision_score``); NaN when there are no positives."""
    y, s = _check_binary(y_true, scores)
    return _average_precision(y, s)


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """ROC-AUC via average ranks (a tied positive/negative pair counts 1/2);
    NaN when there are no positives or no negatives."""
    y, s = _check_binary(y_true, scores)
    return _roc_auc(y, s)


def recall_at_fpr(y_true: npt.ArrayLike, scores: npt.ArrayLike, max_fpr: float = 0.01) -> float:
    """The largest recall of ``score >= t`` over thresholds t at distinct score values with
    false-positive rate ``<= max_fpr`` (0.0 if even the top score breaks the budget, since
    flagging nothing is allowed). NaN when there are no positives or no negatives."""
    _check_max_fpr(max_fpr)
    y, s = _check_binary(y_true, scores)
    return _recall_at_fpr(y, s, max_fpr)


def threshold_for_fpr(y_true: npt.ArrayLike, scores: npt.ArrayLike, max_fpr: float) -> float:
    """The lowest distinct score value t whose rule ``flag if score >= t`` keeps the
    false-positive rate ``<= max_fpr`` on this data: the threshold at which
    :func:`recall_at_fpr` is attained. ``+inf`` (flag nothing) when even the top score breaks
    the budget. Positives are not needed (only negatives define the FPR); with no negatives
    this raises :class:`MetricInputError` rather than returning NaN, because a NaN decision
    threshold would silently flag nothing.
    """
    _check_max_fpr(max_fpr)
    y, s = _check_binary(y_true, scores)
    if int(y.sum()) == y.size:
        raise MetricInputError("y_true: no negatives, so the false-positive rate is undefined")
    last, _, thresholds = _feasible_last(y, s, max_fpr)
    return float("inf") if last < 0 else float(thresholds[last])


def fraud_metrics(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> dict[str, float]:
    """``auc_pr`` (average precision), ``roc_auc``, ``recall@1%fpr``, ``n`` and ``n_pos``;
    undefined metrics are NaN as described in the module docstring."""
    y, s = _check_binary(y_true, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return {"auc_pr": _average_precision(y, s), "roc_auc": float("nan"),
                "recall@1%fpr": float("nan"), "n": int(y.size), "n_pos": n_pos}
    # One sort serves all three (the pooled bootstrap of a long run calls this ~1,000 times
    # on every transaction); each equals its own function above exactly.
    tps, fps, _ = _curve(y, s)
    feasible = _curve_feasible_last(fps, n_neg, 0.01)
    return {
        "auc_pr": _curve_average_precision(tps, fps, n_pos),
        "roc_auc": _curve_roc_auc(tps, fps, n_pos, n_neg),
        "recall@1%fpr": 0.0 if feasible < 0 else float(tps[feasible]) / n_pos,
        "n": int(y.size),
        "n_pos": n_pos,
    }
