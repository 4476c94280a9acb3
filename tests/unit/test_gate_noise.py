"""The promotion gate tells a fraud regression from the noise of a few held-out frauds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.update.gate import decide, paired_ap_interval

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
