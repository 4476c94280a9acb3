"""cluster.comparison.evaluation.GradientBoostingFraud: the report's tree baseline for fraud."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from cluster.comparison.evaluation import FRAUD_BASELINE, GradientBoostingFraud
from training.data.schema import WindowData

pytestmark = pytest.mark.unit

BASE = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """HistGradientBoosting runs far faster on one thread than with OpenMP workers spinning
    against whatever else the machine runs."""
    with threadpool_limits(1):
        yield


def _ts(minutes: list[int]) -> pd.Series:
    return pd.Series([BASE + pd.Timedelta(minutes=m) for m in minutes]).astype(
        "datetime64[us, UTC]")


def _txns(labels: list[bool | None], fraud_like: list[bool], start: int = 0) -> WindowData:
    n = len(labels)
    frame = pd.DataFrame({
        "txn_id": [f"t{start + i}" for i in range(n)], "user_id": "u1", "item_id": None,
        "ts": _ts(list(range(start, start + n))),
        "amount": [500.0 + i if f else 10.0 + i % 3 for i, f in enumerate(fraud_like)],
        "is_fraud": pd.array(labels, dtype="boolean"),
        "f_night": [1.0 if f else 0.0 for f in fraud_like]})
    return WindowData("wt", transactions=frame)


def test_hist_gradient_boosting_separates_separable_data() -> None:
    flags = [i % 2 == 0 for i in range(60)]
    train = _txns(list(flags), flags)
    hgb = GradientBoostingFraud(seed=3)
    assert hgb.fit(train.transactions, train.fraud_features) >= 0.0
    assert hgb.model is not None
    assert hgb.model.l2_regularization == 1.0 and hgb.model.random_state == 3
    assert hgb.columns == ["amount", "f_night"]
    test_flags = [i % 3 == 0 for i in range(30)]
    metrics = hgb.evaluate(_txns(list(test_flags), test_flags, start=100))
    assert metrics["roc_auc"] == 1.0 and metrics["auc_pr"] == 1.0
    assert metrics["n"] == 30.0 and metrics["n_pos"] == 10.0
    assert FRAUD_BASELINE == "hist_gradient_boosting"


def test_hist_gradient_boosting_with_one_class_has_no_model_and_ranks_nothing() -> None:
    hgb = GradientBoostingFraud(seed=0)
    # 20 legit labelled rows plus fraud-looking rows without a label: still one class.
    labels: list[bool | None] = [False] * 20 + [None] * 10
    data = _txns(labels, [False] * 20 + [True] * 10)
    hgb.fit(data.transactions, data.fraud_features)
    assert hgb.model is None
    # No fraud model yet: a constant score, so the window still counts in the pooled
    # comparison (at chance: AP = the fraud rate, ROC-AUC 0.5).
    metrics = hgb.evaluate(_txns([True, False, False], [True, False, False]))
    assert metrics["auc_pr"] == pytest.approx(1 / 3) and metrics["roc_auc"] == 0.5
    assert metrics["n"] == 3.0
    assert math.isnan(hgb.evaluate(_txns([None], [True]))["auc_pr"])  # no labelled row


def test_hist_gradient_boosting_ignores_unlabelled_rows_for_fit_and_eval() -> None:
    flags = [i % 2 == 0 for i in range(60)]
    # Unlabelled rows that look like the opposite class must change nothing.
    noisy_labels: list[bool | None] = list(flags) + [None] * 20
    noisy = _txns(noisy_labels, flags + [i % 2 == 1 for i in range(20)])
    clean = _txns(list(flags), flags)
    a, b = GradientBoostingFraud(seed=1), GradientBoostingFraud(seed=1)
    a.fit(noisy.transactions, noisy.fraud_features)
    b.fit(clean.transactions, clean.fraud_features)
    assert a.model is not None and b.model is not None
    probe = clean.transactions[["amount", "f_night"]].to_numpy(dtype=np.float64)
    assert np.array_equal(a.model.predict_proba(probe), b.model.predict_proba(probe))
    eval_labels: list[bool | None] = [True, False, None, False, None, True]
    metrics = a.evaluate(_txns(eval_labels, [True, False, True, False, False, True]))
    assert metrics["n"] == 4.0 and metrics["roc_auc"] == 1.0
