"""Fraud-scoring metrics (label 1 = fraud, a higher score = more suspicious), numpy only.

* ``average_precision``: sklearn's ``average_precision_score`` semantics,
  ``sum_n (R_n - R_{n-1}) P_n`` over thresholds at the distinct score values.
* ``roc_auc``: Mann-Whitney U with average ranks for tied scores (a tied pair counts 1/2).
* ``recall_at_fpr``: the largest recall over thresholds at distinct score values
  (flag when ``score >= threshold``) whose false-positive rate is ``<= max_fpr``.

Degenerate input returns NaN for each metric it leaves undefined instead of raising:
no positives -> AP, ROC-AUC and recall@fpr are NaN; no negatives -> ROC-AUC and recall@fpr
are NaN (AP stays defined). Malformed input (non-finite scores, labels outside {0, 1},
mismatched shapes) raises :class:`~training.evaluation.metrics.MetricInputError` naming the
argument.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.evaluation.metrics import MetricInputError


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
