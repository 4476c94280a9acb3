"""benchmarks/fraud_new_users.py splits a window's realised review FPR by known and new users."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.scripts import load_script

pytestmark = pytest.mark.unit


def test_the_split_counts_each_legitimate_row_once_under_its_user() -> None:
    bench = load_script("fraud_new_users")
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=bool)
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.8, 0.7, 0.9, 0.2])
    known = np.array([True, True, True, True, False, False, True, False])
    rates = bench.split_rates(labels, scores, known, threshold=0.5)
    # 3 of 6 legitimate rows flagged: 1 of 4 known users', both new users'.
    assert rates["fpr_all"] == pytest.approx(0.5)
    assert (rates["fpr_known"], rates["fpr_new"]) == (pytest.approx(0.25), pytest.approx(1.0))
    assert (rates["legit_known"], rates["legit_new"]) == (4, 2)
    assert (rates["frauds_new_user"], rates["frauds"]) == (1, 2)
    assert rates["known_share"] == pytest.approx(5 / 8)
    none_new = bench.split_rates(labels, scores, np.ones(8, dtype=bool), threshold=0.5)
    assert none_new["fpr_new"] is None and none_new["legit_new"] == 0
