"""Each update's calibration of the served fraud probability (``training.model.calibration``):
on what evidence the map is fitted.

A calibration map needs scores of labelled rows the scoring model did not train on, and
enough frauds among them (20 for Platt, 50 for isotonic). The held-out tail rarely has
them: a week of the demo shop holds 5-13 frauds, an hour of the ULB data about 2. With
the tail alone every shipped version stayed uncalibrated, and the trees' near-zero
probabilities for every transaction they do not flag were read as they are (on the
synthetic shop at ``--label-delay 1``: a mean 0.2% where 2.9% were frauds, pooled ECE
0.033).

So the evidence depends on what carries the score:

* **Trees alone** (tree weight 1: what every update serves until the tail holds
  ``MIN_BLEND_FRAUDS`` frauds, ``training.update.fraud_blend``): the trees' out-of-fold
  scores over every labelled row the published trees are fitted on (the replay reservoir,
  the window's rows and the tail). Each row is scored by trees with the published trees'
  settings fitted on the other four fifths — the cross-fitting of scikit-learn's
  ``CalibratedClassifierCV(ensemble=False)`` (Platt 1999; Niculescu-Mizil & Caruana, ICML
  2005) — so the evidence holds every known fraud, and the map is fitted to the trees that
  are served (fitted on the same rows), not to the candidate's pre-tail trees.
* **The neural head carries weight**: the candidate's own blended scores on the held-out
  tail; its head cannot be refitted per fold, and the blend only gets head weight when the
  tail holds enough frauds to show that it pays.

Either way the kind (identity, Platt, isotonic) is chosen by out-of-fold Brier score
(``fit_calibration``), and every map is strictly increasing, so no version's ranking changes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from training.data.schema import WindowData
from training.evaluation.evaluate import fraud_labels_scores
from training.features.history import PurchaseHistory
from training.model import ShopStreamModel
from training.model.calibration import NO_LABELS, FraudCalibration, fit_calibration
from training.update.fraud_blend import FALLBACK_TREE_WEIGHT, out_of_fold_tree_scores

logger = logging.getLogger(__name__)


def calibration_evidence(model: ShopStreamModel, history: PurchaseHistory,
                         holdout: WindowData, published: pd.DataFrame, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, uncalibrated probabilities, what they are) to fit ``model``'s calibration
    on: out-of-fold tree scores over ``published`` (the labelled rows the served trees are
    fitted on) when the trees alone carry the score, else the held-out tail's scores."""
    if model.fraud_trees is not None and model.cfg.fraud_tree_weight == FALLBACK_TREE_WEIGHT \
            and len(published):
        scored = out_of_fold_tree_scores(model, published, history, seed)
        if scored is not None:
            return (*scored, "out-of-fold tree scores")
    labels, scores = fraud_labels_scores(model, history, holdout)
    return labels, scores, "held-out transactions"


def fit_fraud_calibration(model: ShopStreamModel, history: PurchaseHistory,
                          holdout: WindowData, published: pd.DataFrame, seed: int
                          ) -> FraudCalibration:
    """Calibrate ``model``'s blended fraud probability (see the module docstring), set it on
    the model and return it; a constant when no labelled fraud and legit are known. The
    parent's calibration the candidate inherited is dropped first: it was fitted to another
    blend. ``published``: every labelled row known, the tail's included."""
    model.set_fraud_calibration(FraudCalibration())
    labels, scores, evidence = calibration_evidence(model, history, holdout, published, seed)
    ever = np.concatenate([published["is_fraud"].to_numpy(dtype=bool) if len(published)
                           else [], labels]).astype(bool)
    calibration = fit_calibration(labels, scores, seed, evidence) \
        if ever.any() and not ever.all() else NO_LABELS
    model.set_fraud_calibration(calibration)
    logger.info("fraud calibration: %s (%s)", calibration.kind, calibration.basis)
    return calibration
