"""benchmarks/fraud_robustness.py's moves: noise keeps values in the range seen before,
evasion moves frauds only, toward the legitimate mean and never past it."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from tests.support.scripts import load_script

pytestmark = pytest.mark.unit


def load() -> ModuleType:
    return load_script("fraud_robustness")


BEFORE = pd.DataFrame({"amount": [10.0, 20.0, 30.0, 200.0],
                       "f": [0.0, 0.0, 1.0, 1.0], "is_fraud": [0, 0, 0, 1]})
TXNS = pd.DataFrame({"amount": [15.0, 190.0, 25.0], "f": [0.0, 1.0, 1.0],
                     "is_fraud": [0, 1, 0]})


def test_evasion_moves_frauds_toward_the_legit_mean_by_at_most_eps_std() -> None:
    rob = load()
    rng = np.random.default_rng(0)
    assert rob.move(TXNS, BEFORE, ["amount", "f"], "evasion", 0.0, rng) is TXNS
    moved = rob.move(TXNS, BEFORE, ["amount", "f"], "evasion", 0.5, rng)
    std = BEFORE["amount"].std()
    # Legit rows untouched; the fraud's amount falls by 0.5 std, toward the legit mean 20.
    pd.testing.assert_frame_equal(moved.iloc[[0, 2]], TXNS.iloc[[0, 2]])
    assert moved.loc[1, "amount"] == pytest.approx(190.0 - 0.5 * std)
    assert moved.loc[1, "f"] == pytest.approx(1.0 - 0.5 * BEFORE["f"].std())
    # A large eps lands on the legit means (20 and 1/3), never past them.
    far = rob.move(TXNS, BEFORE, ["amount", "f"], "evasion", 100.0, rng)
    assert far.loc[1, ["amount", "f"]].tolist() == pytest.approx([20.0, 1 / 3])


def test_noise_moves_every_row_and_stays_in_the_range_seen_before() -> None:
    rob = load()
    moved = rob.move(TXNS, BEFORE, ["amount", "f"], "noise", 1.0, np.random.default_rng(1))
    assert (moved["amount"] != TXNS["amount"]).all()
    assert moved["amount"].between(10.0, 200.0).all() and moved["f"].between(0, 1).all()
    assert (moved["is_fraud"] == TXNS["is_fraud"]).all()
