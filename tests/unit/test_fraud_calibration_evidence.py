"""What each update's fraud calibration is fitted on (training/update/fraud_calibration.py):
out-of-fold tree scores over every known labelled row while the trees alone carry the
score, the held-out tail's scores once the neural head has weight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.support.published import shop_history, shop_model
from tests.unit.test_fraud_trees import CFG, txns
from training.data.schema import WindowData
from training.evaluation.evaluate import fraud_scores
from training.evaluation.metrics import fraud_metrics
from training.evaluation.reliability import expected_calibration_error
from training.features.examples import fraud_examples
from training.model import ShopStreamModel
from training.model.fraud_trees import AMOUNT_COLUMN, FraudTrees, tree_inputs
from training.update.fraud_blend import (
    FALLBACK_TREE_WEIGHT,
    fraud_blend,
    known_transactions,
    out_of_fold_tree_scores,
    refit_trees,
)
from training.update.fraud_calibration import calibration_evidence, fit_fraud_calibration

pytestmark = pytest.mark.unit


@pytest.fixture
def model() -> ShopStreamModel:
    return shop_model(12, 20, CFG)


def noisy(n: int, seed: int) -> pd.DataFrame:
    """Fraud with probability 0.5 for a large amount at night, 0.02 otherwise: a signal
    that trees on a few hundred rows fit too confidently."""
    frame = txns(n, seed)
    rng = np.random.default_rng(seed + 100)
    rule = frame["is_fraud"].to_numpy(dtype=bool)
    return frame.assign(is_fraud=rng.random(n) < np.where(rule, 0.5, 0.02))


def inputs(model: ShopStreamModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    examples = fraud_examples(model, frame, shop_history(model))
    return tree_inputs(examples.amount, examples.features), examples.label.astype(bool)


def test_out_of_fold_scores_are_of_rows_the_trees_did_not_see(model: ShopStreamModel) -> None:
    # Random labels: trees fitted on a row find "signal" on it, trees that never saw it cannot.
    x, y = inputs(model, txns(1000, 0, fraud_rate=0.1))
    columns = (AMOUNT_COLUMN, *model.cfg.fraud_features)
    trees = FraudTrees.fit(x, y, columns, seed=0)
    assert trees is not None
    in_sample = fraud_metrics(y, trees.logits(x))["roc_auc"]
    oof = FraudTrees.out_of_fold_logits(x, y, columns, seed=0)
    assert oof is not None and oof.shape == (len(y),)
    assert in_sample > 0.75 and abs(fraud_metrics(y, oof)["roc_auc"] - 0.5) < 0.08
    # A real signal is still found out of fold.
    x, y = inputs(model, txns(600, 0))
    oof = FraudTrees.out_of_fold_logits(x, y, columns, seed=0)
    assert oof is not None and fraud_metrics(y, oof)["auc_pr"] > 0.9
    # Fewer frauds than folds: nothing to cross-fit on.
    few = y & (np.cumsum(y) <= 4)
    assert FraudTrees.out_of_fold_logits(x, few, columns, seed=0) is None


def test_trees_alone_are_calibrated_on_every_known_row(model: ShopStreamModel) -> None:
    history = shop_history(model)
    known, tail = noisy(1500, 0), noisy(300, 1)
    tail = tail.assign(is_fraud=tail["is_fraud"] & (np.cumsum(tail["is_fraud"]) <= 6))
    fraud_blend(model, known, tail, history, seed=0)
    assert model.cfg.fraud_tree_weight == FALLBACK_TREE_WEIGHT  # 6 held-out frauds: fallback
    published = known_transactions(known, tail)
    labels, _, evidence = calibration_evidence(model, history, WindowData("w", transactions=tail),
                                               published, seed=0)
    assert evidence == "out-of-fold tree scores" and len(labels) == len(published) == 1800
    assert labels.sum() == published["is_fraud"].sum() > 50  # isotonic's minimum
    calibration = fit_fraud_calibration(model, history, WindowData("w", transactions=tail),
                                        published, seed=0)
    assert calibration.kind in ("platt", "isotonic")
    assert "1800 out-of-fold tree scores" in calibration.basis
    # The map is fitted to the trees that are served: refitted on the same rows.
    refit_trees(model, published, history, seed=0)
    test = noisy(4000, 2)
    examples = fraud_examples(model, test, history)
    served = fraud_scores(model, examples)
    raw = 1.0 / (1.0 + np.exp(-model.fraud_trees.logits(  # type: ignore[union-attr]
        tree_inputs(examples.amount, examples.features))))
    before = expected_calibration_error(examples.label.astype(bool), raw)
    after = expected_calibration_error(examples.label.astype(bool), served)
    assert after < 0.7 * before and after < 0.03
    assert np.all(np.diff(served[np.argsort(raw, kind="stable")]) >= 0)  # order kept


def test_once_the_head_has_weight_the_tail_is_the_evidence(model: ShopStreamModel) -> None:
    history = shop_history(model)
    known, tail = noisy(1500, 0), noisy(300, 1)
    fraud_blend(model, known, tail, history, seed=0)
    model.set_fraud_trees(model.fraud_trees, 0.5)
    labels, scores, evidence = calibration_evidence(
        model, history, WindowData("w", transactions=tail), known_transactions(known, tail), 0)
    assert evidence == "held-out transactions" and len(labels) == len(tail) == len(scores)
    # Trees alone but too few frauds to cross-fit: the tail again.
    legit_heavy = known.assign(is_fraud=known["is_fraud"] & (np.cumsum(known["is_fraud"]) <= 3))
    model.set_fraud_trees(model.fraud_trees, FALLBACK_TREE_WEIGHT)
    assert out_of_fold_tree_scores(model, legit_heavy, history, 0) is None
    assert calibration_evidence(model, history, WindowData("w", transactions=tail),
                                legit_heavy, 0)[2] == "held-out transactions"
