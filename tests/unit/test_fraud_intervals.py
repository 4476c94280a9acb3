"""Pooled fraud metrics with bootstrap intervals (cluster.comparison.fraud_intervals)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cluster.comparison.fraud_intervals import (
    budget_precision,
    fraud_table,
    pool_fraud_intervals,
    pooled_metrics,
    record_fraud_intervals,
)
from cluster.comparison.verdicts import pooled_fraud_line
from training.store import LocalStore

pytestmark = pytest.mark.unit


def test_alert_budget_precision_counts_each_windows_top_scores() -> None:
    # Window 1: 150 rows -> budget 2 alerts (ceil 1.5): one fraud among the top two.
    y1 = np.zeros(150, dtype=bool)
    y1[[0, 5]] = True
    s1 = np.linspace(0, 1, 150)
    s1[0], s1[149] = 2.0, 1.5  # the fraud at 0 scores top, a legit second; 5 is low
    # Window 2: 50 rows -> budget 1: the top score is a fraud.
    y2 = np.zeros(50, dtype=bool)
    y2[7] = True
    s2 = np.zeros(50)
    s2[7] = 1.0
    assert budget_precision([(y1, s1), (y2, s2)]) == pytest.approx(2 / 3)
    assert math.isnan(budget_precision([]))
    row = pooled_metrics([(y1, s1), (y2, s2)])
    assert set(row) == {"auc_pr", "roc_auc", "recall@1%fpr", "precision@budget"}
    assert 0.0 < row["auc_pr"] <= 1.0


def _window(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = rng.random(n) < 0.05
    signal = labels + rng.normal(0, 0.7, n)
    return labels, {"incremental": signal + rng.normal(0, 0.1, n),
                    "hist_gradient_boosting": rng.random(n)}


def test_pooled_intervals_bracket_the_value_and_tell_a_better_method(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = LocalStore(tmp_path / "store")
    result = {"evaluated_windows": ["w1", "w2"],
              "methods": {"incremental": {}, "hist_gradient_boosting": {}}}
    for window in ("w1", "w2"):
        labels, scores = _window(rng, 600)
        record_fraud_intervals(result, store, window, {m: (labels, s)
                                                       for m, s in scores.items()})
    assert "methods" not in result["fraud_intervals"]  # pooled once, when the run ends
    pool_fraud_intervals(result, store)
    tree = result["fraud_intervals"]
    assert list(tree["per_window"]) == ["w1", "w2"]
    # The run's method order, not the saved records' (the store sorts their keys).
    assert list(tree["methods"]) == ["incremental", "hist_gradient_boosting"]
    assert tree["windows"] == 2 and tree["n"] == 1200 and tree["n_pos"] > 30
    for method, row in tree["methods"].items():
        for metric, cell in row.items():
            assert cell["lo"] <= cell["value"] <= cell["hi"], (method, metric)
    ours, random = tree["methods"]["incremental"], tree["methods"]["hist_gradient_boosting"]
    assert ours["auc_pr"]["lo"] > random["auc_pr"]["hi"]
    pair = tree["paired"]["incremental vs hist_gradient_boosting"]
    assert pair["auc_pr"]["lo"] > 0 and pair["roc_auc"]["lo"] > 0
    line = pooled_fraud_line(result, "incremental", "hist_gradient_boosting")
    assert line is not None and "CI of the difference" in line and ": better;" in line
    lines = fraud_table(result)
    assert any(line.startswith("| incremental |") for line in lines)
    # The saved scores are what a resumed run pools: the second window's record used both.
    assert store.get_config("pipeline-per-txn/w1")["methods"].keys() == {
        "incremental", "hist_gradient_boosting"}


def test_identical_methods_have_a_zero_paired_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels, scores = _window(rng, 400)
    result = {"evaluated_windows": ["w"]}
    same = scores["incremental"]
    store = LocalStore(tmp_path)
    record_fraud_intervals(result, store, "w",
                           {"incremental": (labels, same), "full_retrain": (labels, same)})
    pool_fraud_intervals(result, store)
    pair = result["fraud_intervals"]["paired"]["incremental vs full_retrain"]
    assert all(pair[m]["diff"] == pair[m]["lo"] == pair[m]["hi"] == 0.0 for m in pair)


def test_calibration_is_reported_per_method_with_the_realised_fpr(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    true_p = rng.uniform(0, 0.2, 2000)
    labels = rng.random(2000) < true_p
    result: dict = {"evaluated_windows": ["w"],
                    "realised_fpr": {"w": {"target": 0.05, "review_threshold": 0.3,
                                           "fpr": 0.06, "alerts": 130, "n": 2000}}}
    store = LocalStore(tmp_path)
    record_fraud_intervals(result, store, "w", {
        "incremental": (labels, true_p), "hist_gradient_boosting": (labels, true_p ** 0.25)})
    pool_fraud_intervals(result, store)
    calibration = result["fraud_intervals"]["calibration"]
    assert calibration["incremental"]["ece"] < 0.03 < calibration["hist_gradient_boosting"]["ece"]
    assert calibration["incremental"]["brier"] < calibration["hist_gradient_boosting"]["brier"]
    assert len(calibration["incremental"]["bins"]) == 2  # probabilities in [0, 0.2)
    text = "\n".join(fraud_table(result))
    assert "| incremental | " in text and "fraud_reliability.png" in text
    assert ("Realised review FPR of `incremental` on each next window (thresholds set on the "
            "held-out tail for FPR 0.05): mean 0.0600 (1.20x the target)") in text
