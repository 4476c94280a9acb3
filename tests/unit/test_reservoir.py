"""Class-split reservoirs of labelled transactions: rare frauds kept whole, legit rows thinned
uniformly, draws in the true class proportion, weights that undo the thinning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.data.schema import WindowData, empty_frame
from training.features.replay import ReplayBuffer, ReplayError
from training.features.reservoir import (
    class_quotas,
    class_split_keep,
    class_weights,
    proportional_counts,
    reservoir_keys,
)
from training.model.fraud_trees import FraudTrees
from training.update.fraud_blend import WEIGHT_COLUMN, row_weights, weigh_known

pytestmark = pytest.mark.unit

BASE = pd.Timestamp("2024-01-01", tz="UTC")


def txn_window(wid: str, n: int, frauds: int, start: int = 0) -> WindowData:
    """``n`` labelled transactions of window ``wid``, the first ``frauds`` of them fraud."""
    ts = pd.Series(BASE + pd.to_timedelta(np.arange(start, start + n), unit="min")
                   ).astype("datetime64[us, UTC]")
    txns = pd.DataFrame({
        "txn_id": [f"{wid}-t{i}" for i in range(n)], "user_id": [f"u{i % 7}" for i in range(n)],
        "item_id": [None] * n, "ts": ts, "amount": np.arange(n) + 1.0,
        "is_fraud": pd.Series(np.arange(n) < frauds, dtype="boolean"),
        "f_a": np.arange(n) * 0.5})
    return WindowData(wid, empty_frame("items"), empty_frame("interactions"), txns)


def test_quotas_keep_everything_that_fits_and_guarantee_each_class_half():
    assert class_quotas(100, 30, 60) == (30, 60)  # fits: all kept
    assert class_quotas(100, 30, 600) == (30, 70)  # legit take what frauds leave free
    assert class_quotas(100, 300, 600) == (50, 50)  # both thinned: half each
    assert class_quotas(100, 600, 20) == (80, 20)  # a fraud-heavy table works the same way
    assert class_quotas(1, 1, 1) == (1, 0) and class_quotas(1, 0, 5) == (0, 1)


def test_no_quota_grows_once_its_class_was_thinned():
    rng = np.random.default_rng(0)
    for _ in range(200):
        capacity = int(rng.integers(1, 60))
        pos = neg = 0
        thinned = {"pos": None, "neg": None}
        for _ in range(20):
            pos += int(rng.integers(0, 8))
            neg += int(rng.integers(0, 30))
            q_pos, q_neg = class_quotas(capacity, pos, neg)
            assert q_pos + q_neg <= capacity and q_pos <= pos and q_neg <= neg
            assert q_pos + q_neg == min(capacity, pos + neg)
            for name, quota, seen in (("pos", q_pos, pos), ("neg", q_neg, neg)):
                if thinned[name] is not None:
                    assert quota <= thinned[name], (capacity, pos, neg)
                if quota < seen:
                    thinned[name] = quota


def test_each_class_is_a_uniform_sample_of_its_rows():
    # rows of three windows, frauds rare: every fraud kept, legit rows kept alike
    sizes = {"w0": (300, 3), "w1": (100, 2), "w2": (50, 1)}
    kept_legit = []
    for seed in range(1500):
        keys = np.concatenate([reservoir_keys(seed, "transactions", w, n)
                               for w, (n, _) in sizes.items()])
        fraud = np.concatenate([np.arange(n) < f for n, f in sizes.values()])
        source = np.repeat(np.arange(3), [n for n, _ in sizes.values()])
        keep = class_split_keep(keys, fraud, 60, int(fraud.sum()), int((~fraud).sum()))
        assert fraud[keep].sum() == 6 and len(keep) == 60
        assert np.all(np.diff(keys[keep]) > 0)  # in key order
        kept_legit.append(np.bincount(source[keep][~fraud[keep]], minlength=3))
    # 54 legit slots over 444 legit rows: 297, 98 and 49 rows kept at 54/444 each
    np.testing.assert_allclose(np.mean(kept_legit, axis=0),
                               np.array([297, 98, 49]) * 54 / 444, atol=0.3)


def test_buffer_keeps_rare_frauds_whole_draws_in_proportion_and_weights_the_thinning():
    buffer = ReplayBuffer(capacity=40, seed=2)
    for w in range(5):
        buffer.add_window(txn_window(f"w{w}", 50, frauds=2, start=100 * w))
    assert buffer.seen_by_class() == (10, 240)
    assert buffer.held_by_class() == (10, 30)  # every fraud; a uniform reservoir keeps ~1.6
    np.testing.assert_allclose(buffer.transaction_weights(np.array([True, False])),
                               [1.0, 8.0])
    np.testing.assert_allclose(class_weights((10, 240), (10, 30)), (1.0, 8.0))
    # a draw keeps the classes as they were seen (10 of 250), not as they are held (10 of 40)
    frauds = [buffer.sample(0, 25, seed=s).transactions["is_fraud"].sum() for s in range(20)]
    assert set(frauds) == {1}
    assert proportional_counts(25, (10, 240), (10, 30)) == (1, 24)
    assert proportional_counts(25, (10, 240), (0, 30)) == (0, 25)


def test_an_unthinned_buffer_draws_and_weighs_as_a_plain_uniform_one():
    buffer = ReplayBuffer(capacity=500, seed=2)
    for w in range(3):
        buffer.add_window(txn_window(f"w{w}", 50, frauds=5, start=100 * w))
    assert buffer.held_by_class() == buffer.seen_by_class() == (15, 135)
    np.testing.assert_array_equal(buffer.transaction_weights(np.array([True, False])), [1, 1])
    held = buffer.frame("transactions")
    rows = np.sort(np.random.default_rng(9).choice(len(held), size=30, replace=False))
    assert buffer.sample(0, 30, seed=9).transactions["txn_id"].tolist() == \
        held["txn_id"].iloc[rows].tolist()


def test_seen_frauds_round_trip_and_older_metas_estimate_them(tmp_path):
    buffer = ReplayBuffer(capacity=40, seed=2)
    for w in range(4):
        buffer.add_window(txn_window(f"w{w}", 50, frauds=2, start=100 * w))
    _, meta = buffer.save(tmp_path)
    meta = json.loads(json.dumps(meta))
    assert meta["seen_frauds"] == 8
    assert ReplayBuffer.load(tmp_path, meta).seen_by_class() == (8, 192)
    older = {k: v for k, v in meta.items() if k != "seen_frauds"}
    # saved by a uniform reservoir: its share of frauds (8 of 40) stands for all 200 seen
    assert ReplayBuffer.load(tmp_path, older).seen_by_class() == (40, 160)
    with pytest.raises(ReplayError, match="seen_frauds"):
        ReplayBuffer.load(tmp_path, {**meta, "seen_frauds": 500})


def test_known_rows_only_in_the_reservoir_stand_for_their_class():
    buffer = ReplayBuffer(capacity=40, seed=2)
    for w in range(5):
        buffer.add_window(txn_window(f"w{w}", 50, frauds=2, start=100 * w))
    whole = txn_window("w5", 20, frauds=1, start=600).transactions
    known = pd.concat([buffer.frame("transactions").drop(columns="_replay_key"), whole],
                      ignore_index=True)
    weighted = weigh_known(known, buffer, whole)
    by_id = weighted.set_index("txn_id")[WEIGHT_COLUMN]
    assert (by_id[whole["txn_id"]] == 1.0).all()
    held = buffer.frame("transactions")
    assert (by_id[held.loc[held["is_fraud"], "txn_id"]] == 1.0).all()
    assert (by_id[held.loc[~held["is_fraud"], "txn_id"]] == 8.0).all()
    np.testing.assert_array_equal(row_weights(weighted), weighted[WEIGHT_COLUMN].to_numpy())
    # fitted in full (a fallback retrain on every window): nothing stands for more
    assert row_weights(weigh_known(known, buffer, known)) is None


def test_weighted_trees_undo_the_thinning_of_legit_rows():
    rng = np.random.default_rng(0)
    n = 100_000
    x = rng.normal(size=(n, 2))
    y = rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] * 1.5 - 5.0)))  # ~1.9% fraud
    kept = y | (rng.random(n) < 0.1)  # every fraud, a tenth of the legit rows
    weights = np.where(y[kept], 1.0, 10.0)

    def mean_probability(w: np.ndarray | None) -> float:
        trees = FraudTrees.fit(x[kept], y[kept], ("a", "b"), seed=0, weights=w)
        assert trees is not None
        return float((1 / (1 + np.exp(-trees.logits(x)))).mean())

    assert abs(mean_probability(weights) - y.mean()) < 0.15 * y.mean()
    assert mean_probability(None) > 4 * y.mean()  # unweighted: the enriched prior
    with pytest.raises(ValueError, match="^weights:"):
        FraudTrees.fit(x[:10], y[:10] | (np.arange(10) < 2), ("a", "b"), 0, np.ones(3))
