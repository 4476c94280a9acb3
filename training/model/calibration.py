"""The served fraud probability, calibrated on held-out labels (Platt or isotonic, chosen by
measurement), stored as JSON in ``model.json`` (key ``fraud_calibration``), never pickled.

A blended logit is a good ranking but not a probability: boosted trees trained on a few
frauds are overconfident, and the class weight of the neural head shifts it. A risk team
sets thresholds and reads scores as probabilities, so each update fits a monotone map on
the held-out tail (rows neither the trees nor the head trained on):

* ``platt``: ``sigmoid(a * logit(p) + b)`` (2 parameters: the least data-hungry);
* ``isotonic``: a non-decreasing step fit, interpolated between its knots; a tiny slope in
  ``p`` is added so that calibration never merges two scores into a tie (ranking, and so
  AUC-PR and the alert queue, stay exactly as they were);
* ``identity``: the blend as it is, when neither beats it or there are too few frauds;
* ``constant``: 0 for every transaction, for a version that has never seen labelled
  frauds and legits (the first windows under ``--label-delay``): its head is untrained,
  and an untrained score is noise that would outrank later versions' confident scores;
  a constant ranks nothing, like a shop without a fraud model.

The choice is the lowest out-of-fold Brier score (5-fold cross-fitting on the tail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("identity", "platt", "isotonic", "constant")
# Held-out frauds each method needs: at least 4 per cross-fitting fold for Platt. Measured on
# the synthetic shop (docs/fraud.md): Platt fitted on tails of 5-13 frauds chose noise, and
# ours' pooled Brier (0.0229) and AUC-PR (0.555) fell behind the uncalibrated blend's.
MIN_FRAUDS = {"platt": 20, "isotonic": 50}
FOLDS = 5
TIE_SLOPE = 1e-4  # keeps isotonic strictly increasing in p (scores are float64)
EPS = 1e-12  # float32 probabilities go below 1e-6: clipping there would make ties


class CalibrationError(ValueError):
    """A stored calibration is malformed; the message names the field."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class FraudCalibration:
    kind: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    basis: str = ""

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``p`` (same shape, order preserved)."""
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))
        if self.kind == "constant":
            return np.zeros_like(p)
        if self.kind == "isotonic":
            fitted = np.interp(p, np.asarray(self.x), np.asarray(self.y))
            return np.clip(fitted * (1.0 - TIE_SLOPE) + TIE_SLOPE * p, 0.0, 1.0)
        return p

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "a": self.a, "b": self.b, "x": list(self.x),
                "y": list(self.y), "basis": self.basis}

    @classmethod
    def from_json(cls, data: Any) -> FraudCalibration:
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise CalibrationError(f"fraud_calibration.kind: expected one of {KINDS}")
        try:
            a, b = float(data.get("a", 1.0)), float(data.get("b", 0.0))
            x = tuple(float(v) for v in data.get("x", []))
            y = tuple(float(v) for v in data.get("y", []))
        except (TypeError, ValueError) as err:
            raise CalibrationError(f"fraud_calibration: a, b, x, y must be numbers: {err}") \
                from err
        if not all(math.isfinite(v) for v in (a, b, *x, *y)):
            raise CalibrationError("fraud_calibration: a, b, x, y must be finite")
        if data["kind"] == "isotonic" and (len(x) != len(y) or len(x) < 2
                                           or any(np.diff(x) < 0) or any(np.diff(y) < 0)):
            raise CalibrationError("fraud_calibration.x/y: isotonic knots must be two "
                                   "non-decreasing lists of the same length (>= 2)")
        return cls(str(data["kind"]), a, b, x, y, str(data.get("basis", "")))


def fit_kind(kind: str, labels: np.ndarray, scores: np.ndarray) -> FraudCalibration:
    """One calibration of ``kind`` fitted on all of (labels, scores)."""
    # scikit-learn is imported by the fits only: a replica applies a stored map (numpy),
    # and importing sklearn would add about a second to every replica's start.
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if kind == "platt":
        reg = LogisticRegression(C=1e4).fit(_logit(scores)[:, None], labels)
        return FraudCalibration("platt", float(reg.coef_[0, 0]), float(reg.intercept_[0]))
    if kind == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(scores, labels.astype(np.float64))
        return FraudCalibration("isotonic", x=tuple(map(float, iso.X_thresholds_)),
                                y=tuple(map(float, iso.y_thresholds_)))
    return FraudCalibration()


def out_of_fold_brier(kind: str, labels: np.ndarray, scores: np.ndarray, seed: int) -> float:
    """Brier score of ``kind`` fitted on 4/5 of the rows and applied to the other 1/5."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    calibrated = np.empty(len(scores))
    for train, test in folds.split(scores, labels):
        calibrated[test] = fit_kind(kind, labels[train], scores[train]).apply(scores[test])
    return float(np.mean((calibrated - labels) ** 2))


NO_LABELS = FraudCalibration("constant", basis="no labelled frauds and legits seen yet: the "
                                               "version ranks nothing")


def fit_calibration(labels: np.ndarray, scores: np.ndarray, seed: int) -> FraudCalibration:
    """The calibration with the lowest out-of-fold Brier on held-out (labels, scores),
    among those with enough frauds; identity when none beats the raw scores."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    frauds, legits = int(labels.sum()), int((~labels).sum())
    briers = {"identity": float(np.mean((scores - labels) ** 2))} if len(labels) else {}
    for kind, needed in MIN_FRAUDS.items():
        if frauds >= max(needed, FOLDS) and legits >= FOLDS:
            briers[kind] = out_of_fold_brier(kind, labels, scores, seed)
    if len(briers) <= 1:
        return FraudCalibration(basis=f"identity: {frauds} held-out frauds (platt needs "
                                      f"{MIN_FRAUDS['platt']})")
    shown = ", ".join(f"{k} {v:.5f}" for k, v in briers.items())
    chosen = fit_kind(min(briers, key=lambda k: briers[k]), labels, scores)
    if chosen.kind == "platt" and chosen.a <= 0:  # would reverse the ranking
        briers.pop("platt")
        chosen = fit_kind(min(briers, key=lambda k: briers[k]), labels, scores)
    return FraudCalibration(chosen.kind, chosen.a, chosen.b, chosen.x, chosen.y,
                            basis=f"out-of-fold Brier on {len(labels)} held-out "
                                  f"transactions ({frauds} frauds): {shown}")
