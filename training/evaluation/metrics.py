"""Top-k ranking metrics (recommendation); the fraud scores' are in
:mod:`training.evaluation.fraud_metrics`.

numpy only, vectorised over users / rows. Item indices are non-negative ints; ``-1`` in a
ranked list means "no item" (padding, e.g. when exclusions leave fewer than k items) and
never counts as a hit.

Ranking (binary relevance, averaged over users whose target set is non-empty):

* ``recall@k  = |top-k ∩ T| / |T|`` (the standard definition: it is below 1 whenever
  ``|T| > k``, unlike the ``min(|T|, k)`` variant).
* ``ndcg@k    = DCG / IDCG`` with ``DCG = sum over hits at 0-based rank r of 1 / log2(r + 2)``
  and IDCG the DCG of ``min(|T|, k)`` hits at ranks ``0..min(|T|, k) - 1``.
* ``hitrate@k = 1`` if any of the top k is in T, else 0.

Intervals: :func:`per_user_ranking_metrics` gives the per-user values behind
:func:`ranking_metrics`; :func:`bootstrap_ci` and :func:`paired_bootstrap_diff` turn them into
percentile-bootstrap intervals of a mean and of a paired difference of means over users.

Malformed input raises :class:`MetricInputError` naming the argument (both modules).
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
