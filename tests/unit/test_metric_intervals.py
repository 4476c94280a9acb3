"""training.evaluation.metrics per-user values and bootstrap intervals;
training.evaluation.rec_split's repeat/new-to-user split, on constructed cases with exact
numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_diff
from training.evaluation.metrics import (
    MetricInputError,
    per_user_ranking_metrics,
    ranking_metrics,
)
from training.evaluation.rec_split import split_rec_metrics, split_rec_per_user

pytestmark = pytest.mark.unit

LOG3 = math.log2(3)


# --------------------------------------------------------------------------- bootstrap


def test_constant_values_give_a_zero_width_interval_at_the_value() -> None:
    assert bootstrap_ci([0.3] * 50) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_interval_of_a_known_distribution_covers_the_mean_with_the_expected_width() -> None:
    values = np.random.default_rng(7).normal(2.0, 1.0, size=2000)
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert lo < 2.0 < hi
    assert lo < float(values.mean()) < hi
    # Normal theory: 2 * 1.96 * sd / sqrt(n).
    assert hi - lo == pytest.approx(2 * 1.96 * values.std(ddof=1) / math.sqrt(2000), rel=0.1)
    assert bootstrap_ci(values, n_boot=2000, seed=1) == (lo, hi)  # seeded: reproducible
    narrow = bootstrap_ci(values, n_boot=2000, seed=1, alpha=0.5)
    assert lo < narrow[0] < narrow[1] < hi


def test_paired_difference_of_a_method_that_wins_on_every_user_excludes_zero() -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(0.0, 0.5, size=300)
    a = b + rng.uniform(0.001, 0.01, size=300)  # better on every user, by a little
    diff, lo, hi = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(float(np.mean(a - b)))
    assert 0.0 < lo <= diff <= hi
    # Unpaired, the same small gain is lost in the spread between users.
    lo_a, hi_a = bootstrap_ci(a)
    lo_b, hi_b = bootstrap_ci(b)
    assert lo_a < hi_b
    assert paired_bootstrap_diff(b, a)[2] < 0.0


def test_identical_methods_give_exactly_zero() -> None:
    values = np.random.default_rng(0).uniform(size=100)
    assert paired_bootstrap_diff(values, values.copy()) == (0.0, 0.0, 0.0)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(MetricInputError, match="a/b: lengths differ"):
        paired_bootstrap_diff([1.0, 2.0], [1.0])
    with pytest.raises(MetricInputError, match="values: 1 non-finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(MetricInputError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.0)
    with pytest.raises(MetricInputError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)


# --------------------------------------------------------------------------- per-user


def test_per_user_values_average_exactly_to_ranking_metrics() -> None:
    rng = np.random.default_rng(5)
    ranked = np.stack([rng.permutation(40)[:10] for _ in range(200)])
    ranked[::7, -3:] = -1
    targets = [rng.choice(40, size=int(rng.integers(0, 6)), replace=False) for _ in range(200)]
    per = per_user_ranking_metrics(ranked, targets, k=10)
    means = ranking_metrics(ranked, targets, k=10)
    keep = [i for i, t in enumerate(targets) if len(t)]
    assert per.users.tolist() == keep
    assert means["ndcg@10"] == float(np.mean(per.ndcg))
    assert means["recall@10"] == float(np.mean(per.recall))
    assert means["hitrate@10"] == float(np.mean(per.hitrate))
    assert means == per.means()
    assert means["n_skipped"] == 200 - len(keep)


def test_per_user_values_by_hand() -> None:
    per = per_user_ranking_metrics([[1, 2, 3], [4, 5, -1], [0, 1, 2]], [[1, 9], [], [2]], k=3)
    assert per.users.tolist() == [0, 2]
    assert per.recall.tolist() == [0.5, 1.0]
    assert per.ndcg.tolist() == pytest.approx([1.0 / (1.0 + 1.0 / LOG3), 0.5])
    assert per.hitrate.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- repeat / new


RANKED = np.array([[0, 1], [2, 3], [4, 5]])
TARGETS = [np.array([0, 5]), np.array([3]), np.array([9])]
WARM = np.array([True, True, False])
REPEAT = [np.array([True, False]), np.array([False]), np.array([False])]


def test_repeat_and_new_split_exact_numbers() -> None:
    m = split_rec_metrics(RANKED, TARGETS, WARM, 2, REPEAT)
    # all: u0 hits 0 at rank 0 of {0, 5}; u1 hits 3 at rank 1 of {3}; u2 (cold) misses.
    assert m["all/recall@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["all/ndcg@2"] == pytest.approx((1.0 / (1.0 + 1.0 / LOG3) + 1.0 / LOG3) / 3)
    assert m["cold/ndcg@2"] == 0.0 and m["cold/n_users"] == 1.0
    # repeat: only u0 has one ({0}, hit at rank 0); u1 has none and is left out.
    assert (m["warm_repeat/ndcg@2"], m["warm_repeat/recall@2"]) == (1.0, 1.0)
    assert (m["warm_repeat/n_users"], m["warm_repeat/n_skipped"]) == (1.0, 1.0)
    # new: u0 {5} missed, u1 {3} hit at rank 1.
    assert m["warm_new/ndcg@2"] == pytest.approx(0.5 / LOG3)
    assert m["warm_new/recall@2"] == 0.5 and m["warm_new/n_users"] == 2.0
    per = split_rec_per_user(RANKED, TARGETS, WARM, 2, REPEAT)
    assert per["warm_new"].users.tolist() == [0, 1] and per["warm_repeat"].users.tolist() == [0]
    assert per["cold"].users.tolist() == [2]  # indices into all rows, not into the part


def test_split_without_repeat_matches_the_old_three_parts() -> None:
    m = split_rec_metrics(RANKED, TARGETS, WARM, 2)
    assert not any(key.startswith("warm_") for key in m)
    assert m["warm/ndcg@2"] == ranking_metrics(RANKED[:2], TARGETS[:2], k=2)["ndcg@2"]
    none_cold = split_rec_metrics(RANKED[:2], TARGETS[:2], WARM[:2], 2)
    assert math.isnan(none_cold["cold/ndcg@2"]) and none_cold["cold/n_users"] == 0.0
    assert "cold/n_skipped" not in none_cold


def test_split_rejects_misaligned_repeat_flags() -> None:
    bad = [np.array([True]), np.array([False]), np.array([False])]
    with pytest.raises(MetricInputError, match="repeat: row 0 has 1 flag"):
        split_rec_metrics(RANKED, TARGETS, WARM, 2, bad)
