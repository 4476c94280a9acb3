"""How well fraud probabilities mean what they say: Brier score, reliability bins and the
expected calibration error (ECE), one home for the gate's logs, the tests and the report."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ECE_BINS = 10  # equal-width probability bins, the usual ECE definition


def brier_score(labels: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def reliability_bins(labels: npt.ArrayLike, probs: npt.ArrayLike, bins: int = ECE_BINS
                     ) -> list[dict[str, float]]:
    """Per non-empty equal-width bin of the probability: its count, mean probability and
    observed fraud rate (the points of a reliability diagram)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": float(mask.sum()),
                        "mean_prob": float(p[mask].mean()), "fraud_rate": float(y[mask].mean())})
    return out


def expected_calibration_error(labels: npt.ArrayLike, probs: npt.ArrayLike,
                               bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share) x |mean probability - observed rate|."""
    rows = reliability_bins(labels, probs, bins)
    total = sum(r["n"] for r in rows)
    if not total:
        return float("nan")
    return float(sum(r["n"] / total * abs(r["mean_prob"] - r["fraud_rate"]) for r in rows))
