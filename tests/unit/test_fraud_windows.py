"""Fraud metrics per window with intervals, and the Handbook's card precision
(cluster.comparison.fraud_intervals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cluster.comparison.fraud_intervals import (
    CARD_METRIC,
    budget_precision,
    card_budget,
    card_precision,
    fraud_table,
    per_window_fraud_table,
    pool_fraud_intervals,
    record_fraud_intervals,
    transaction_cards,
)
from cluster.comparison.report_data import to_strict_json
from tests.unit.test_fraud_intervals import _window
from training.store import LocalStore

pytestmark = pytest.mark.unit


def test_card_precision_flags_cards_by_their_highest_score() -> None:
    # Window 1: 3 cards -> budget 1 card. Card 0's top payment (0.9) is legit but its other
    # one is a fraud: the card is a hit, the payment is not.
    y1 = np.array([False, True, True, False])
    s1 = np.array([0.9, 0.1, 0.8, 0.2])
    c1 = np.array([0, 0, 1, 2])
    # Window 2: 2 cards -> budget 1: card 1 (0.7) has no fraud; card 0's fraud scores 0.6.
    y2 = np.array([True, False])
    s2 = np.array([0.6, 0.7])
    c2 = np.array([0, 1])
    assert card_precision([(y1, s1), (y2, s2)], [card_budget(c1), card_budget(c2)]) \
        == pytest.approx(1 / 2)
    assert budget_precision([(y1, s1), (y2, s2)]) == pytest.approx(0.0)
    # 150 cards -> budget 2 (ceil 1.5): the two best-scored cards.
    y = np.zeros(300, dtype=bool)
    y[[1, 3]] = True  # cards 0 and 1 each have a fraud, on their low-scored payment
    codes = np.repeat(np.arange(150), 2)
    s = np.where(codes < 2, 1.0, 0.5) - 0.1 * y
    assert card_budget(codes)[1] == 2
    assert card_precision([(y, s)], [card_budget(codes)]) == pytest.approx(1.0)


def test_transaction_cards_follow_the_labelled_rows() -> None:
    txns = pd.DataFrame({"user_id": ["u1", None, "u2", "u1"],
                         "is_fraud": [0.0, 1.0, np.nan, 0.0]})
    cards = transaction_cards(txns)
    assert cards is not None and list(cards) == ["u1", "transaction 1", "u1"]
    assert transaction_cards(txns.assign(user_id=None)) is None  # anonymised (ULB)


def test_each_window_gets_its_own_intervals_and_card_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = LocalStore(tmp_path / "store")
    result: dict = {"evaluated_windows": ["w1", "w2"]}
    for window in ("w1", "w2"):
        labels, scores = _window(rng, 800)
        cards = np.array([f"u{i}" for i in rng.integers(0, 300, len(labels))])
        record_fraud_intervals(result, store, window,
                               {m: (labels, s) for m, s in scores.items()}, cards)
    pool_fraud_intervals(result, store)
    tree = result["fraud_intervals"]
    assert list(tree["per_window"]) == ["w1", "w2"]  # w1's kept when w2 is recorded
    for window, part in tree["per_window"].items():
        assert part["n"] == 800
        for method, row in part["methods"].items():
            assert set(row) >= {"auc_pr", "precision@budget", CARD_METRIC}
            for metric, cell in row.items():
                assert cell["lo"] <= cell["value"] <= cell["hi"], (window, method, metric)
        pair = part["paired"]["incremental vs hist_gradient_boosting"]
        assert pair["auc_pr"]["lo"] > 0  # ours carries the signal, the baseline is noise
    assert CARD_METRIC in tree["methods"]["incremental"]
    lines = per_window_fraud_table(result)
    assert "by AUC-PR per window: 2 better, 0 worse, 0 not distinguishable" in lines[0]
    assert sum(line.startswith(("| w1 |", "| w2 |")) for line in lines) == 4  # x (ours, HGB)
    # Without cards (ULB) the card metric is left out, not guessed.
    bare: dict = {"evaluated_windows": ["w"]}
    labels, scores = _window(rng, 300)
    bare_store = LocalStore(tmp_path / "bare")
    record_fraud_intervals(bare, bare_store, "w", {m: (labels, s) for m, s in scores.items()})
    pool_fraud_intervals(bare, bare_store)
    assert CARD_METRIC not in bare["fraud_intervals"]["methods"]["incremental"]


def test_a_window_without_a_fraud_reads_not_measured_and_keeps_the_report(
        tmp_path: Path) -> None:
    """A quiet hour with no fraud (ULB at night) has no AUC-PR, ROC-AUC or recall: its cells
    are null in the saved results and "not measured" in both tables, counted apart from
    the verdicts, while the pooled table still reads every window's frauds."""
    rng = np.random.default_rng(5)
    store = LocalStore(tmp_path / "store")
    result: dict = {"evaluated_windows": ["w1", "w2"]}
    labels, scores = _window(rng, 600)
    record_fraud_intervals(result, store, "w1", {m: (labels, s) for m, s in scores.items()})
    quiet = np.zeros(40, dtype=bool)
    record_fraud_intervals(result, store, "w2",
                           {m: (quiet, rng.random(40)) for m in scores})
    pool_fraud_intervals(result, store)
    saved = to_strict_json(result)  # what metrics.json holds: NaN -> null
    assert saved["fraud_intervals"]["per_window"]["w2"]["methods"]["incremental"][
        "auc_pr"]["value"] is None
    lines = per_window_fraud_table(saved)
    assert "1 better, 0 worse, 0 not distinguishable, 1 not measured" in lines[0]
    quiet_ours = next(line for line in lines if line.startswith("| w2 | incremental |"))
    assert quiet_ours.count("not measured") == 4  # AUC-PR, ROC-AUC, recall, paired AP
    assert "0.000 [0.000, 0.000]" in quiet_ours  # precision at the budget: no hit
    pooled = fraud_table(saved)
    ours = next(line for line in pooled if line.startswith("| incremental |"))
    assert "not measured" not in ours and f"{int(labels.sum())} frauds" in pooled[0]


def test_a_windows_own_intervals_do_not_depend_on_the_windows_before_it(
        tmp_path: Path) -> None:
    """Each window resamples with its own seed (its position), so recording w2 after w1 or
    on its own gives the same intervals, and no window's record pools the run."""
    rng = np.random.default_rng(7)
    first, second = _window(rng, 500), _window(rng, 300)
    chained: dict = {"evaluated_windows": ["w1", "w2"]}
    store = LocalStore(tmp_path / "chained")
    for window, (labels, scores) in (("w1", first), ("w2", second)):
        record_fraud_intervals(chained, store, window,
                               {m: (labels, s) for m, s in scores.items()})
    alone: dict = {"evaluated_windows": ["w1", "w2"]}
    labels, scores = second
    record_fraud_intervals(alone, LocalStore(tmp_path / "alone"), "w2",
                           {m: (labels, s) for m, s in scores.items()})
    assert chained["fraud_intervals"]["per_window"]["w2"] == \
        alone["fraud_intervals"]["per_window"]["w2"]
    assert set(chained["fraud_intervals"]) == {"per_window"}
