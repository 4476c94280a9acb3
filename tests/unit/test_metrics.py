"""training.evaluation.metrics (ranking metrics, top_k) and fraud_metrics (checked against
sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from training.evaluation.fraud_metrics import (
    average_precision,
    fraud_metrics,
    recall_at_fpr,
    roc_auc,
    threshold_for_fpr,
)
from training.evaluation.metrics import MetricInputError, ranking_metrics, top_k

pytestmark = pytest.mark.unit

L3 = 1.0 / math.log2(3)  # discount at 0-based rank 1


# --------------------------------------------------------------------------- ranking


def test_ranking_metrics_hand_computed() -> None:
    ranked = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [7, 8, 9]], dtype=np.int64)
    targets = [{2, 10}, {5, 4, 7, 8}, set(), {1}]
    got = ranking_metrics(ranked, targets, k=3)
    # user 0: one hit at rank 1 of |T|=2; user 1: hits at ranks 0, 1 of |T|=4 (IDCG over 3)
    ndcg0 = L3 / (1.0 + L3)
    ndcg1 = (1.0 + L3) / (1.0 + L3 + 0.5)
    assert set(got) == {"recall@3", "ndcg@3", "hitrate@3", "n_users", "n_skipped"}
    assert got["recall@3"] == pytest.approx((0.5 + 0.5 + 0.0) / 3, rel=1e-12)
    assert got["ndcg@3"] == pytest.approx((ndcg0 + ndcg1 + 0.0) / 3, rel=1e-12)
    assert got["hitrate@3"] == pytest.approx(2 / 3, rel=1e-12)
    assert got["n_users"] == 3
    assert got["n_skipped"] == 1


def test_ranking_metrics_recall_divides_by_target_size_not_k() -> None:
    # all k=2 slots hit, but |T| = 4: recall 0.5, while NDCG is perfect (IDCG over min(4, 2))
    got = ranking_metrics(np.array([[3, 1]]), [np.array([1, 2, 3, 4])], k=2)
    assert got["recall@2"] == 0.5
    assert got["ndcg@2"] == pytest.approx(1.0, rel=1e-12)
    assert got["hitrate@2"] == 1.0


def test_ranking_metrics_uses_first_k_columns_and_ignores_padding() -> None:
    ranked = np.array([[5, -1, -1, 9], [0, 9, 2, 1]])
    targets = [np.array([9]), np.array([9, 9])]  # duplicate targets count once
    got = ranking_metrics(ranked, targets, k=2)
    assert got["recall@2"] == 0.5  # user 0 misses (9 is at column 3); user 1 hits at rank 1
    assert got["ndcg@2"] == pytest.approx(0.5 * L3, rel=1e-12)
    assert got["hitrate@2"] == 0.5
    arrays = ranking_metrics(ranked, [np.array([9]), np.array([9])], k=2)
    sets = ranking_metrics(ranked, [{9}, {9}], k=2)
    assert arrays == sets == got


def test_ranking_metrics_all_skipped_is_nan() -> None:
    got = ranking_metrics(np.array([[1, 2]]), [set()], k=2)
    assert math.isnan(got["recall@2"]) and math.isnan(got["ndcg@2"])
    assert math.isnan(got["hitrate@2"])
    assert (got["n_users"], got["n_skipped"]) == (0, 1)


@pytest.mark.parametrize(
    ("ranked", "targets", "k", "name"),
    [
        (np.array([[1, 2]]), [{1}], 3, "ranked"),
        (np.array([[1, 1, 2]]), [{1}], 3, "ranked"),
        (np.array([[1.0, 2.0]]), [{1}], 2, "ranked"),
        (np.array([1, 2]), [{1}], 2, "ranked"),
        (np.array([[1, 2]]), [{1}, {2}], 2, "targets"),
        (np.array([[1, 2]]), [{-3}], 2, "targets"),
        (np.array([[1, 2]]), [{1}], 0, "k"),
    ],
)
def test_ranking_metrics_rejects_bad_input(ranked, targets, k, name) -> None:
    with pytest.raises(MetricInputError, match=f"^{name}:"):
        ranking_metrics(ranked, targets, k=k)


# --------------------------------------------------------------------------- top_k


def test_top_k_orders_and_breaks_ties_by_lower_index() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.5, 0.0],
                       [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    got = top_k(scores, 3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[3, 1, 2], [0, 1, 2]])


def test_top_k_ties_are_deterministic_on_large_rows() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 300)).astype(np.float64)
    got = top_k(scores, 17)
    # reference: full stable sort by (-score, index)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :17]
    np.testing.assert_array_equal(got, expected)


def test_top_k_ties_spread_over_long_rows() -> None:
    # ties at the threshold far apart in rows longer than top_k's 1024-column scan block
    scores = np.zeros((3, 2500))
    scores[0, [1500, 2100, 2400]] = 1.0
    scores[1, [5, 2499]] = 2.0
    got = top_k(scores, 2)
    np.testing.assert_array_equal(got, [[1500, 2100], [5, 2499], [0, 1]])
    # every score -inf: allowed items come first, then padding
    minus = np.full((2, 2000), -np.inf)
    exclude = [np.arange(0, 2000, 2), np.arange(1999)]
    np.testing.assert_array_equal(top_k(minus, 3, exclude=exclude), [[1, 3, 5], [1999, -1, -1]])


def test_top_k_exclusions() -> None:
    scores = np.array([[9.0, 1.0, 8.0, 3.0, 8.0],
                       [9.0, 1.0, 8.0, 3.0, 8.0]])
    got = top_k(scores, 3, exclude=[np.array([0, 2]), {0}])
    np.testing.assert_array_equal(got, [[4, 3, 1], [2, 4, 3]])


def test_top_k_pads_with_minus_one_when_too_few_items() -> None:
    scores = np.array([[0.3, -np.inf, 0.7], [0.3, 0.2, 0.7]])
    exclude: list[list[int]] = [[0, 2], []]
    got = top_k(scores, 4, exclude=exclude)
    # an allowed -inf item still beats excluded ones; padding goes to the end
    np.testing.assert_array_equal(got, [[1, -1, -1, -1], [2, 0, 1, -1]])


def test_top_k_rejects_nan_and_bad_exclusions() -> None:
    with pytest.raises(MetricInputError, match="^scores:"):
        top_k(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(MetricInputError, match="^exclude:"):
        top_k(np.array([[0.1, 0.2]]), 1, exclude=[[2]])
    with pytest.raises(MetricInputError, match="^exclude:"):
        top_k(np.array([[0.1, 0.2]]), 1, exclude=[[0], [1]])
    with pytest.raises(MetricInputError, match="^k:"):
        top_k(np.array([[0.1, 0.2]]), 0)


def test_top_k_feeds_ranking_metrics() -> None:
    scores = np.array([[0.0, 0.9, 0.8, 0.1], [0.0, 0.1, 0.2, 0.3]])
    ranked = top_k(scores, 2, exclude=[[0], [0, 3]])
    np.testing.assert_array_equal(ranked, [[1, 2], [2, 1]])
    got = ranking_metrics(ranked, [{2}, {3}], k=2)
    assert got["hitrate@2"] == 0.5
    assert got["ndcg@2"] == pytest.approx(0.5 * L3, rel=1e-12)


# --------------------------------------------------------------------------- fraud


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap_and_auc_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    y = rng.random(n) < 0.1
    # few distinct values: many ties, including mixed-label ties
    scores = rng.integers(0, 12, size=n) / 4.0 + y * rng.integers(0, 3, size=n) / 4.0
    assert len(np.unique(scores)) < 30
    assert average_precision(y, scores) == pytest.approx(
        average_precision_score(y, scores), rel=1e-12)
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), rel=1e-12)
    assert roc_auc(y.astype(int), scores) == roc_auc(y, scores)


@pytest.mark.parametrize("max_fpr", [0.0, 0.01, 0.05, 0.2])
def test_recall_at_fpr_matches_sklearn_roc_curve(max_fpr: float) -> None:
    rng = np.random.default_rng(7)
    y = rng.random(2000) < 0.05
    scores = np.round(rng.normal(size=2000) + 1.5 * y, 1)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    assert recall_at_fpr(y, scores, max_fpr) == pytest.approx(tpr[fpr <= max_fpr].max(),
                                                              rel=1e-12)


def test_recall_at_fpr_and_threshold_hand_built() -> None:
    # 100 negatives at scores 0..99 and 5 positives. The lowest threshold within the budget
    # of allowed false positives wins; it lands on a positive just above the next negative.
    neg = np.arange(100, dtype=np.float64)
    pos = np.array([100.0, 99.5, 98.5, 97.5, 50.0])
    y = np.r_[np.zeros(100), np.ones(5)]
    scores = np.r_[neg, pos]
    # no false positive allowed: only 100 and 99.5 sit above every negative
    assert recall_at_fpr(y, scores, 0.0) == 0.4
    assert threshold_for_fpr(y, scores, 0.0) == 99.5
    # 1% of 100 negatives = 1: the negative at 99 is flagged, 98.5 is caught
    assert recall_at_fpr(y, scores, 0.01) == 0.6
    assert threshold_for_fpr(y, scores, 0.01) == 98.5
    # 2 negatives (99, 98): 97.5 is caught
    assert recall_at_fpr(y, scores, 0.02) == 0.8
    assert threshold_for_fpr(y, scores, 0.02) == 97.5
    # 50 negatives (50..99, the one at 50 tied with a positive): everything is caught
    assert recall_at_fpr(y, scores, 0.5) == 1.0
    assert threshold_for_fpr(y, scores, 0.5) == 50.0
    assert recall_at_fpr(y, scores, 0.49) == 0.8


def test_threshold_is_inf_when_top_score_breaks_budget() -> None:
    y = np.array([0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.1, 0.2])
    assert threshold_for_fpr(y, scores, 0.1) == math.inf
    assert recall_at_fpr(y, scores, 0.1) == 0.0
    # a tie between the top negative and a positive cannot be split
    assert recall_at_fpr([0, 1, 0], [0.9, 0.9, 0.1], 0.4) == 0.0
    assert recall_at_fpr([0, 1, 0], [0.9, 0.9, 0.1], 0.5) == 1.0


def test_fraud_metrics_keys_and_values() -> None:
    y = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.7])
    got = fraud_metrics(y, scores)
    assert set(got) == {"auc_pr", "roc_auc", "recall@1%fpr", "n", "n_pos"}
    # thresholds 0.9 -> P=1 R=.5; 0.8 -> P=1/2; 0.7 -> tp 2 of 4 -> P=1/2, R=1
    assert got["auc_pr"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5, rel=1e-12)
    # pairs (pos, neg): 0.9 beats all 3; 0.7 beats 0.1, ties 0.7, loses to 0.8 -> 4.5 / 6
    assert got["roc_auc"] == pytest.approx(4.5 / 6, rel=1e-12)
    assert got["recall@1%fpr"] == 0.5
    assert (got["n"], got["n_pos"]) == (5, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraud_metrics_from_one_sort_equal_each_function_and_the_rank_formula(
        seed: int) -> None:
    """fraud_metrics shares one sorted curve between its metrics; each value is exactly its
    own function's, and ROC-AUC exactly the Mann-Whitney average-rank formula (ties 1/2)."""
    rng = np.random.default_rng(seed)
    for n, ties in ((3000, True), (3000, False), (7, True)):
        y = rng.random(n) < 0.05
        y[:2] = [True, False]
        s = rng.integers(0, 9, n) / 8.0 + 0.25 * y if ties else rng.normal(size=n) + y
        got = fraud_metrics(y, s)
        _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        rank_sum = float((np.cumsum(counts) - (counts - 1) / 2.0)[inverse][y].sum())
        n_pos = int(y.sum())
        by_ranks = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * (n - n_pos))
        assert got["roc_auc"] == roc_auc(y, s) == by_ranks
        assert got["auc_pr"] == average_precision(y, s)
        assert got["recall@1%fpr"] == recall_at_fpr(y, s, 0.01)


def test_degenerate_labels_give_nan() -> None:
    scores = np.array([0.2, 0.4, 0.6])
    no_pos = fraud_metrics(np.zeros(3), scores)
    assert math.isnan(no_pos["auc_pr"]) and math.isnan(no_pos["roc_auc"])
    assert math.isnan(no_pos["recall@1%fpr"]) and no_pos["n_pos"] == 0
    no_neg = fraud_metrics(np.ones(3, dtype=bool), scores)
    assert no_neg["auc_pr"] == 1.0  # defined: every flagged item is fraud
    assert math.isnan(no_neg["roc_auc"]) and math.isnan(no_neg["recall@1%fpr"])
    empty = fraud_metrics(np.array([]), np.array([]))
    assert math.isnan(empty["auc_pr"]) and empty["n"] == 0
    # a threshold only needs negatives
    assert threshold_for_fpr(np.zeros(3), scores, 0.34) == 0.6
    with pytest.raises(MetricInputError, match="^y_true:"):
        threshold_for_fpr(np.ones(3), scores, 0.01)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [average_precision, roc_auc, recall_at_fpr, fraud_metrics,
                                lambda y, s: threshold_for_fpr(y, s, 0.01)])
def test_non_finite_scores_raise(fn, bad) -> None:
    with pytest.raises(MetricInputError, match="^scores: 1 non-finite"):
        fn(np.array([0, 1, 0]), np.array([0.1, bad, 0.3]))


@pytest.mark.parametrize(
    ("y", "scores", "name"),
    [
        (np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]), "y_true"),
        (np.array([0, np.nan, 1]), np.array([0.1, 0.2, 0.3]), "y_true"),
        (np.array([0, 1]), np.array([0.1, 0.2, 0.3]), "y_true/scores"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2]]), "y_true"),
    ],
)
def test_bad_labels_raise(y, scores, name) -> None:
    with pytest.raises(MetricInputError, match=f"^{name}:"):
        fraud_metrics(y, scores)


def test_max_fpr_is_validated() -> None:
    with pytest.raises(MetricInputError, match="^max_fpr:"):
        recall_at_fpr([0, 1], [0.1, 0.2], 1.5)
    with pytest.raises(MetricInputError, match="^max_fpr:"):
        threshold_for_fpr([0, 1], [0.1, 0.2], -0.1)
