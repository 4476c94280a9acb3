"""Promotion gate: publish a candidate only if no task's main metric drops too far.

The candidate and the incumbent (the current ``latest``) are scored on the same
held-out slice; each task's main metric may drop by at most ``tolerance`` (absolute).
A task the slice cannot measure (no rows, or NaN for either model) does not vote.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training.metrics import threshold_for_fpr

# Main metric per task, as keys of the evaluation dicts.
MAIN_METRICS: dict[str, str] = {"rec": "all/ndcg@{k}", "fraud": "auc_pr"}
# Default fraud decisions when a slice has no frauds to calibrate on.
DEFAULT_THRESHOLDS: dict[str, float] = {"review": 0.5, "decline": 0.9}


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
           tolerance: float, k: int) -> GateDecision:
    """Promote unless some task's main metric drops by more than ``tolerance``
    (``k``: the cut-off of the ranking metric, for the message)."""
    if incumbent is None:
        return GateDecision(True, "no incumbent: first version", candidate, {})
    drops = []
    for task, value in candidate.items():
        old = incumbent.get(task, math.nan)
        if math.isnan(old) or math.isnan(value):
            continue
        if value < old - tolerance:
            drops.append(f"{task} {metric_name(task, k)} fell {old:.4f} -> {value:.4f} "
                         f"(tolerance {tolerance})")
    if drops:
        return GateDecision(False, "; ".join(drops), candidate, incumbent)
    return GateDecision(True, f"no task dropped by more than {tolerance}", candidate, incumbent)


def fraud_thresholds(labels: np.ndarray, scores: np.ndarray, review_fpr: float = 0.05,
                     decline_fpr: float = 0.005) -> dict[str, Any]:
    """Decision thresholds calibrated on held-out scores: review / decline at set FPRs."""
    if len(labels) == 0 or labels.all() or not labels.any():
        return {**DEFAULT_THRESHOLDS, "basis": "default (no labelled frauds and legits)"}
    review = float(threshold_for_fpr(labels, scores, review_fpr))
    decline = float(threshold_for_fpr(labels, scores, decline_fpr))
    review = min(review, 1.0)
    decline = max(min(decline, 1.0), review)
    return {"review": review, "decline": decline,
            "basis": f"held-out FPR {review_fpr} (review) / {decline_fpr} (decline), "
                     f"{int(labels.sum())} frauds of {len(labels)}"}
