"""Fraud thresholds from an alert budget (--review-rate): the review threshold sends that
share of held-out transactions to review, labelled or not; the decline threshold stays at
its FPR; the report checks the realised alert rate against the target."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.comparison.fraud_intervals import realised_line, realised_review
from training.cli import ConfigError
from training.incremental_config import IncrementalConfig
from training.update.gate import DEFAULT_THRESHOLDS, alert_rate_threshold, fraud_thresholds

pytestmark = pytest.mark.unit

SCORES = np.arange(200) / 200.0  # 0.000 .. 0.995
LABELS = SCORES >= 0.97          # the top 6 are frauds


def test_the_budget_threshold_flags_that_share_of_every_transaction() -> None:
    assert alert_rate_threshold(SCORES, 0.05) == 0.95  # the 10th highest of 200
    assert (SCORES >= alert_rate_threshold(SCORES, 0.05)).sum() == 10
    assert alert_rate_threshold(SCORES, 0.001) == 0.995  # at least one alert
    ties = np.array([0.9, 0.9, 0.9, 0.1])
    assert (ties >= alert_rate_threshold(ties, 0.25)).sum() == 3  # ties are all flagged


def test_review_at_the_budget_decline_at_its_fpr() -> None:
    out = fraud_thresholds(LABELS, SCORES, review_rate=0.05, decline_fpr=0.005)
    assert out["review"] == 0.95 and out["target"] == {"alert_rate": 0.05}
    # 194 legit rows: FPR 0.005 allows none above the threshold, so decline sits just
    # above the highest legit score and never below review.
    assert out["review"] <= out["decline"] and (SCORES[~LABELS] >= out["decline"]).sum() == 0
    assert "alert rate 0.05" in out["basis"]
    by_fpr = fraud_thresholds(LABELS, SCORES, review_fpr=0.05)
    assert by_fpr["target"] == {"fpr": 0.05}
    assert (SCORES[~LABELS] >= by_fpr["review"]).mean() <= 0.05


def test_a_budget_needs_no_labels() -> None:
    # Labels late (label delay): no labelled rows, yet every transaction is scored.
    none = np.zeros(0, dtype=bool)
    out = fraud_thresholds(none, np.zeros(0), review_rate=0.05, all_scores=SCORES)
    # The default decline (0.9) would sit below review: decline never does.
    assert out["review"] == 0.95 and out["decline"] == max(DEFAULT_THRESHOLDS["decline"], 0.95)
    low = fraud_thresholds(none, np.zeros(0), review_rate=0.5, all_scores=SCORES)
    assert low["review"] == 0.5 and low["decline"] == DEFAULT_THRESHOLDS["decline"]
    assert "no labels" in out["basis"]
    assert fraud_thresholds(none, np.zeros(0))["basis"].startswith("default")


def test_late_labels_place_the_cut_and_fresh_scores_move_it() -> None:
    """Under a label delay the labelled rows are a window old; the newest transactions'
    scores (no labels) carry each threshold to the same alert share of today's scores."""
    rng = np.random.default_rng(0)
    old = rng.uniform(0.0, 0.5, 4000)  # last window's legits (and a few frauds on top)
    labels = np.r_[np.zeros(4000, dtype=bool), np.ones(40, dtype=bool)]
    scores = np.r_[old, np.full(40, 0.9)]
    legit_today = rng.uniform(0.25, 0.75, 4000)  # today every legit scores 0.25 higher
    fresh = np.r_[legit_today, np.full(40, 0.95)]
    stale = fraud_thresholds(labels, scores, review_fpr=0.05, decline_fpr=0.005)
    moved = fraud_thresholds(labels, scores, review_fpr=0.05, decline_fpr=0.005,
                             fresh_scores=fresh)
    # The stale review cut (~0.475) would send 45% of today's legits to review; the
    # carried one keeps the targeted share.
    assert np.mean(legit_today >= stale["review"]) > 0.4
    assert np.mean(legit_today >= moved["review"]) == pytest.approx(0.05, abs=0.002)
    assert moved["decline"] >= moved["review"] and moved["target"] == {"fpr": 0.05}
    assert moved["basis"].endswith("carried to 4040 newer, unlabelled transactions")
    # An alert budget counts today's transactions, not last window's.
    budget = fraud_thresholds(labels, scores, review_rate=0.1, fresh_scores=fresh)
    assert budget["review"] == alert_rate_threshold(fresh, 0.1)
    # No labels yet (the first windows under a delay): the model learned no fraud and
    # scores alike, so no share of its fresh scores is a cut; the defaults hold.
    none = fraud_thresholds(np.zeros(0, dtype=bool), np.zeros(0), review_rate=0.01,
                            fresh_scores=np.full(500, 0.3))
    assert (none["review"], none["decline"]) == (DEFAULT_THRESHOLDS["review"],
                                                 DEFAULT_THRESHOLDS["decline"])
    # Nothing fresh: the thresholds stay where the labels put them.
    assert fraud_thresholds(labels, scores, 0.05, 0.005, fresh_scores=np.array([])) == stale


def test_settings_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match="review_rate"):
        IncrementalConfig.of(review_rate=1.0)
    with pytest.raises(ConfigError, match="decline_fpr"):
        IncrementalConfig.of(review_fpr=0.01, decline_fpr=0.02)
    assert IncrementalConfig().continual.review_rate == 0.0  # FPR-based by default, as before


def test_the_report_checks_the_realised_alert_rate_against_the_budget() -> None:
    realised = [{"target": None, "target_alert_rate": 0.01, "fpr": 0.009, "alert_rate": 0.012,
                 "alerts": 12, "n": 1000},
                {"target": None, "target_alert_rate": 0.01, "fpr": 0.007, "alert_rate": 0.008,
                 "alerts": 8, "n": 1000}]
    line = realised_line(realised)
    assert "review alert rate" in line and "alert rate 0.01): mean 0.0100 (1.00x" in line
    assert "alerts raised 20 of 2000" in line
    older = [{"target": 0.05, "fpr": 0.06, "alerts": 130, "n": 2000}]  # no alert rate keys
    assert "FPR 0.05): mean 0.0600 (1.20x the target)" in realised_line(older)


def test_each_window_is_checked_against_the_target_its_thresholds_were_set_for() -> None:
    labels = np.array([False] * 98 + [True] * 2)
    scores = np.arange(100) / 100.0
    budget = realised_review({"review": 0.9, "target": {"alert_rate": 0.1}}, labels, scores)
    assert budget is not None and budget["target_alert_rate"] == 0.1
    assert (budget["alerts"], budget["alert_rate"]) == (10, 0.1)
    assert budget["fpr"] == pytest.approx(8 / 98)
    # A version from before the budget was set for REVIEW_FPR; default thresholds (no
    # held-out scores yet) for nothing, so that window is not checked.
    older = realised_review({"review": 0.9, "basis": "held-out FPR 0.05 (review)"}, labels,
                            scores)
    assert older is not None and older["target"] == 0.05 and older["target_alert_rate"] is None
    assert realised_review({"review": 0.5, "basis": "default (no labels)"}, labels,
                           scores) is None
    assert realised_review({"review": 0.5, "target": {"fpr": 0.05}}, labels[:0],
                           scores[:0]) is None
