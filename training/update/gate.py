"""Promotion gate: publish a candidate only if no task's main metric drops too far.

The candidate and the incumbent (the current ``latest``) are scored on the same
held-out slice; each task's main metric may drop by at most ``tolerance`` (absolute).
A task the slice cannot measure (no rows, or NaN for either model) does not vote. A drop
must also be outside the noise of the slice: fraud's of its few held-out frauds
(:func:`paired_ap_interval`), rec's of its few held-out users (:func:`paired_user_interval`;
a weekly tail holds 16-32 warm users, and one user's list moves the mean NDCG by ~0.01).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training.evaluation.bootstrap import paired_bootstrap_diff
from training.evaluation.fraud_metrics import average_precision, threshold_for_fpr
from training.incremental_config import DECLINE_FPR, REVIEW_FPR

# Main metric per task, as keys of the evaluation dicts.
MAIN_METRICS: dict[str, str] = {"rec": "all/ndcg@{k}", "fraud": "auc_pr"}
# Default fraud decisions when a slice has no frauds to calibrate on.
DEFAULT_THRESHOLDS: dict[str, float] = {"review": 0.5, "decline": 0.9}
GATE_BOOT = 200  # resamples of the paired intervals


@dataclass
class GateDecision:
    promote: bool
    reason: str
    candidate: dict[str, float] = field(default_factory=dict)
    incumbent: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def main_metrics(rec: dict[str, dict[str, float]], fraud: dict[str, float],
                 k: int) -> dict[str, float]:
    """{task: main metric} of one model's evaluation (NaN where unmeasured)."""
    model = rec.get("model", {})
    return {"rec": float(model.get(metric_name("rec", k), math.nan)),
            "fraud": float(fraud.get(metric_name("fraud", k), math.nan))}


def metric_name(task: str, k: int) -> str:
    """The main metric's key, e.g. ``all/ndcg@20``."""
    return MAIN_METRICS[task].format(k=k)


def decide(candidate: dict[str, float], incumbent: dict[str, float] | None,
           tolerance: float, k: int,
           intervals: Mapping[str, tuple[float, float]] | None = None) -> GateDecision:
    """Promote unless some task's main metric drops by more than ``tolerance``
    (``k``: the cut-off of the ranking metric, for the message). A task with a paired
    interval of (candidate - incumbent) in ``intervals`` (see :func:`paired_ap_interval`)
    only counts as dropped when the interval lies below 0 too: a fall that resampling the
    held-out rows can undo is noise, not a regression."""
    if incumbent is None:
        return GateDecision(True, "no incumbent: first version", candidate, {})
    drops, noise = [], []
    for task, value in candidate.items():
        old = incumbent.get(task, math.nan)
        if math.isnan(old) or math.isnan(value) or value >= old - tolerance:
            continue
        fell = f"{task} {metric_name(task, k)} fell {old:.4f} -> {value:.4f}"
        lo, hi = (intervals or {}).get(task, (math.nan, math.nan))
        if math.isfinite(hi) and hi >= 0.0:
            noise.append(f"{fell} within noise (paired 95% CI of the difference "
                         f"[{lo:+.4f}, {hi:+.4f}])")
            continue
        drops.append(f"{fell} (tolerance {tolerance})")
    if drops:
        return GateDecision(False, "; ".join(drops + noise), candidate, incumbent)
    reason = f"no task dropped by more than {tolerance}"
    return GateDecision(True, "; ".join([reason, *noise]), candidate, incumbent)


def paired_ap_interval(labels: np.ndarray, candidate: np.ndarray, incumbent: np.ndarray,
                       n_boot: int = GATE_BOOT, seed: int = 0, alpha: float = 0.05
                       ) -> tuple[float, float]:
    """Percentile-bootstrap interval of AP(candidate) - AP(incumbent) over the same
    resampled held-out transactions; (-inf, inf) when no resample has both classes. Fraud
    AUC-PR on the few frauds of one window's tail moves by several points between
    resamples, far more than the gate's tolerance."""
    y = np.asarray(labels, dtype=bool)
    a, b = np.asarray(candidate, np.float64), np.asarray(incumbent, np.float64)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].any() and not y[i].all():
            diffs.append(average_precision(y[i], a[i]) - average_precision(y[i], b[i]))
    if not diffs:
        return -math.inf, math.inf
    lo, hi = np.quantile(np.asarray(diffs), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def paired_user_interval(candidate: Mapping[str, float], incumbent: Mapping[str, float],
                         n_boot: int = GATE_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean per-user difference (candidate -
    incumbent) over the users both models were scored on, resampled as pairs; (-inf, inf)
    with fewer than two such users (then the tolerance alone decides)."""
    users = sorted(set(candidate) & set(incumbent))
    if len(users) < 2:
        return -math.inf, math.inf
    _, lo, hi = paired_bootstrap_diff([candidate[u] for u in users],
                                      [incumbent[u] for u in users], n_boot, seed)
    return lo, hi


def alert_rate_threshold(scores: np.ndarray, rate: float) -> float:
    """The score at or above which ``rate`` of ``scores`` lie: the ``ceil(rate * n)``-th
    highest (ties at it are flagged too)."""
    k = max(1, math.ceil(rate * len(scores)))
    return float(np.sort(scores)[::-1][min(k, len(scores)) - 1])


def carry_threshold(threshold: float, scores: np.ndarray, fresh: np.ndarray) -> float:
    """``threshold``, placed on ``scores``, moved to the same alert share of the ``fresh``
    scores (quantile mapping): where that cut lies in today's score distribution when the
    labels that placed it are windows old. Unchanged when it flags nothing or there is
    nothing fresh."""
    if not len(fresh) or not len(scores) or not math.isfinite(threshold):
        return threshold
    share = float(np.mean(scores >= threshold))
    return alert_rate_threshold(fresh, share) if share > 0 else threshold


def fraud_thresholds(labels: np.ndarray, scores: np.ndarray, review_fpr: float = REVIEW_FPR,
                     decline_fpr: float = DECLINE_FPR, review_rate: float = 0.0,
                     all_scores: np.ndarray | None = None,
                     fresh_scores: np.ndarray | None = None) -> dict[str, Any]:
    """Decision thresholds set on held-out scores. Decline at a false-positive rate of the
    labelled rows; review at one too, or, with ``review_rate`` > 0, at an alert budget: that
    share of ``all_scores`` (every transaction, labelled or not; default ``scores``) goes to
    review. ``fresh_scores`` (the newest transactions, not yet labelled: under a label
    delay the labelled rows are windows old) move each threshold to the same alert share of
    today's scores (:func:`carry_threshold`), and are the alert budget's base, once labels
    of both classes exist. ``target`` says which rate was aimed at, for the realised rate
    to be checked against."""
    labelled = len(labels) > 0 and labels.any() and not labels.all()
    every = scores if all_scores is None else all_scores
    # Fresh scores move cuts that labels placed; before any label (a model that learned no
    # fraud scores every transaction alike) a share of them means nothing.
    fresh = np.asarray([] if fresh_scores is None or not labelled else fresh_scores,
                       dtype=np.float64)
    budget_base = fresh if len(fresh) else every
    if review_rate > 0 and len(budget_base):
        review = min(alert_rate_threshold(budget_base, review_rate), 1.0)
        target, review_basis = {"alert_rate": review_rate}, f"alert rate {review_rate}"
    elif labelled:
        review = float(threshold_for_fpr(labels, scores, review_fpr))
        review = min(carry_threshold(review, every, fresh), 1.0)
        target, review_basis = {"fpr": review_fpr}, f"FPR {review_fpr}"
    else:
        return {**DEFAULT_THRESHOLDS, "basis": "default (no labelled frauds and legits)"}
    decline = carry_threshold(float(threshold_for_fpr(labels, scores, decline_fpr)), every,
                              fresh) if labelled else DEFAULT_THRESHOLDS["decline"]
    decline = max(min(decline, 1.0), review)
    carried = f"; carried to {len(fresh)} newer, unlabelled transactions" if len(fresh) else ""
    return {"review": review, "decline": decline, "target": target,
            "basis": f"held-out {review_basis} (review) / "
                     + (f"FPR {decline_fpr} (decline), {int(labels.sum())} frauds of "
                        f"{len(labels)}" if labelled else "default decline (no labels)")
                     + carried}
