"""The promotion gate tells a regression from the noise of a few held-out frauds or users."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.unit.tiny_shop import TINY, tiny_window
from training.data.schema import WindowData
from training.evaluation.evaluate import evaluate_rec, evaluate_rec_by_user
from training.features.history import PurchaseHistory
from training.fit.loop import init_model
from training.update.gate import decide, paired_ap_interval, paired_user_interval

pytestmark = pytest.mark.unit


def test_a_small_fall_within_noise_promotes_and_says_so() -> None:
    cand, inc = {"rec": 0.30, "fraud": 0.747}, {"rec": 0.30, "fraud": 0.761}
    plain = decide(cand, inc, 0.01, 20)
    assert not plain.promote and "fraud auc_pr fell 0.7610 -> 0.7470" in plain.reason
    noisy = decide(cand, inc, 0.01, 20, {"fraud": (-0.09, 0.05)})
    assert noisy.promote and "within noise" in noisy.reason and "[-0.0900, +0.0500]" in noisy.reason
    real = decide(cand, inc, 0.01, 20, {"fraud": (-0.05, -0.002)})
    assert not real.promote and "tolerance 0.01" in real.reason
    # An interval never rescues another task's drop.
    rec_drop = decide({"rec": 0.20, "fraud": 0.747}, inc, 0.01, 20, {"fraud": (-0.09, 0.05)})
    assert not rec_drop.promote and rec_drop.reason.startswith("rec all/ndcg@20 fell")


def test_the_paired_interval_is_wide_with_few_frauds_and_narrow_with_many() -> None:
    rng = np.random.default_rng(0)

    def case(n: int, rate: float) -> tuple[float, float]:
        y = rng.random(n) < rate
        signal = y + rng.normal(0, 0.8, n)
        return paired_ap_interval(y, signal + rng.normal(0, 0.3, n),
                                  signal + rng.normal(0, 0.3, n))

    few_lo, few_hi = case(300, 0.03)
    many_lo, many_hi = case(6000, 0.2)
    assert few_lo < 0 < few_hi and many_lo < 0 < many_hi
    assert few_hi - few_lo > 3 * (many_hi - many_lo)
    y = np.zeros(50, dtype=bool)
    assert paired_ap_interval(y, np.ones(50), np.ones(50)) == (-math.inf, math.inf)
    # A clearly better candidate: the whole interval is above 0.
    y = rng.random(2000) < 0.1
    good, bad = y + rng.normal(0, 0.3, 2000), rng.random(2000)
    assert paired_ap_interval(y, good, bad)[0] > 0.3


def test_a_rec_fall_is_judged_by_the_paired_interval_over_users() -> None:
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(24)]  # a weekly tail: 16-32 warm users
    old = dict(zip(users, rng.random(24)))
    shifted = {u: v - 0.02 for u, v in old.items()}  # every user 0.02 worse: real
    lo, hi = paired_user_interval(shifted, old)
    assert hi < 0 and lo == pytest.approx(-0.02) and hi == pytest.approx(-0.02)
    moves = rng.normal(0, 0.3, 24)  # lists move user by user; on average 0.02 worse
    noisy = {u: v - 0.02 + m for (u, v), m in zip(old.items(), moves - moves.mean())}
    n_lo, n_hi = paired_user_interval(noisy, old)
    assert n_lo < 0 < n_hi
    cand = {"rec": float(np.mean(list(noisy.values()))), "fraud": 0.5}
    inc = {"rec": float(np.mean(list(old.values()))), "fraud": 0.5}
    assert cand["rec"] == pytest.approx(inc["rec"] - 0.02)
    assert not decide(cand, inc, 0.01, 20).promote
    within = decide(cand, inc, 0.01, 20, {"rec": (n_lo, n_hi)})
    assert within.promote and "rec all/ndcg@20 fell" in within.reason
    assert "within noise" in within.reason
    assert not decide(cand, inc, 0.01, 20, {"rec": (lo, hi)}).promote


def test_the_user_interval_pairs_common_users_and_needs_two() -> None:
    assert paired_user_interval({"a": 1.0}, {"a": 0.0}) == (-math.inf, math.inf)
    assert paired_user_interval({"a": 1.0, "b": 0.0}, {"c": 0.0, "d": 1.0}) == \
        (-math.inf, math.inf)
    # Users only one model could score are left out of the pairs.
    assert paired_user_interval({"a": 0.5, "b": 0.5, "x": 0.0}, {"a": 0.2, "b": 0.2}) == \
        pytest.approx((0.3, 0.3))


def test_user_ndcg_is_the_evaluated_ndcg_user_by_user() -> None:
    window = tiny_window()
    inter = window.interactions
    past, later = inter.iloc[:10], inter.iloc[10:].reset_index(drop=True)
    model = init_model(TINY, window)
    model.eval()
    history = PurchaseHistory(3).update(past)
    nxt = WindowData("w1", window.items, later, window.transactions.iloc[0:0])
    per_user = evaluate_rec_by_user(model, history, past, nxt, k=4)[1]
    evaluated = evaluate_rec(model, history, past, nxt, k=4)["model"]
    assert sorted(per_user) == sorted(later["user_id"].unique())
    assert len(per_user) == evaluated["all/n_users"]
    assert np.mean(list(per_user.values())) == pytest.approx(evaluated["all/ndcg@4"])
