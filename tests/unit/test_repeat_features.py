"""Repeat-aware scoring: the purchase profile, point-in-time features, logQ, one ranking rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from training.evaluation.evaluate import rank_pool
from training.features import profile as profiles
from training.features.examples import (
    FraudExamples,
    WindowExamples,
    iter_batches,
    rec_examples,
)
from training.features.history import PurchaseHistory
from training.features.profile import REPEAT_FEATURES, PurchaseProfile, RepeatFeatures
from training.model import IdMap, ModelConfig, RecBatch, ShopStreamModel

pytestmark = pytest.mark.unit

LOOKUP = {"x": 1, "y": 2, "z": 3}


def _buys(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "ts": pd.to_datetime([r[2] for r in rows], utc=True),
                         "event": "purchase"})


def _lookup(ids: np.ndarray) -> np.ndarray:
    return np.asarray([LOOKUP.get(i, 0) for i in ids], dtype=np.int64)


def test_profile_counts_recency_and_popularity_exactly() -> None:
    profile = PurchaseProfile().update(_buys([
        ("a", "x", "2020-01-01"), ("a", "y", "2020-01-02"), ("a", "x", "2020-01-03"),
        ("b", "x", "2020-01-05"), ("a", "z", "2020-01-04")]))
    assert profile.as_of == pd.Timestamp("2020-01-05", tz="UTC")
    rep = profile.repeat_features(["a", "b", "nobody", "a"], 4, _lookup)
    # a: x (2 buys) first by count, then z (most recent), then y; b: x only; nobody: none.
    assert rep.items.tolist() == [[1, 3, 2, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 3, 2, 0]]
    feats = dict(zip(REPEAT_FEATURES, rep.features[0, 0]))
    assert feats["log_count"] == pytest.approx(math.log1p(2))
    assert feats["log_days_since"] == pytest.approx(math.log1p(2.0))  # 01-03 -> 01-05
    assert feats["share"] == pytest.approx(0.5)
    assert feats["log_recency_rank"] == pytest.approx(math.log1p(1))  # z is more recent
    assert feats["log_user_items"] == pytest.approx(math.log1p(3))
    assert feats["log_user_days_since"] == pytest.approx(math.log1p(1.0))  # z on 01-04
    assert not rep.features[2].any()
    pop = profile.item_popularity(["x", "y", "never"])
    np.testing.assert_allclose(pop, np.log1p([[3, 3], [1, 1], [0, 0]]), rtol=1e-6)
    later = profile.update(_buys([("c", "y", "2020-02-01")]))
    # The decayed count halves the old one; "last update" counts only the new purchases.
    np.testing.assert_allclose(later.item_popularity(["x", "y"]),
                               np.log1p([[0, 1.5], [1, 1.5]]), rtol=1e-6)


def test_profile_round_trips_through_parquet(tmp_path) -> None:
    history = PurchaseHistory(3).update(_buys([("a", "x", "2020-01-01"),
                                               ("a", "x", "2020-01-03")]))
    written = history.save(tmp_path / "history.parquet")
    assert sorted(p.name for p in written) == ["history.parquet", "item_popularity.parquet",
                                               "profile.parquet"]
    back = PurchaseHistory.load(tmp_path / "history.parquet", 3)
    assert back.profile.as_of == history.profile.as_of
    a = back.profile.repeat_features(["a"], 2, _lookup)
    b = history.profile.repeat_features(["a"], 2, _lookup)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.features, b.features)


def _model() -> ShopStreamModel:
    cfg = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3, repeat_items=4,
                      dropout=0.0, text_cache_size=0)
    model = ShopStreamModel(cfg, IdMap(), IdMap(), [""])
    model.extend_vocab(["a", "b"], ["x", "y", "z"], {"x": "red cup", "y": "blue pot",
                                                     "z": "green jar"})
    return model


def test_window_rows_see_the_snapshot_and_earlier_baskets_only() -> None:
    model = _model()
    before = PurchaseHistory(3).update(_buys([("a", "x", "2020-01-01")]))
    window = _buys([("a", "x", "2020-02-01"), ("a", "y", "2020-02-02"),
                    ("a", "z", "2020-02-02"), ("a", "x", "2020-02-03")])
    # A replayed old row (before the snapshot) mixed into the window.
    replayed = _buys([("b", "z", "2019-12-01")])
    ex = rec_examples(model, pd.concat([window, replayed], ignore_index=True), before)
    x, y, z = (model.items.index_of(i) for i in "xyz")
    rows_a = np.flatnonzero(ex.user_idx == model.users.index_of("a"))
    assert ex.target_idx[rows_a].tolist() == [x, y, z, x]  # time order
    # Feb-01 sees January's x; both Feb-02 lines see x twice but not each other (same
    # basket); Feb-03 sees everything before it, never itself.
    assert ex.rep_items[rows_a].tolist() == [[x, 0, 0, 0], [x, 0, 0, 0], [x, 0, 0, 0],
                                             [x, y, z, 0]]
    counts = np.expm1(ex.rep_feats[rows_a, :, 0]).round(3)
    assert counts.tolist() == [[1, 0, 0, 0], [2, 0, 0, 0], [2, 0, 0, 0], [2, 1, 1, 0]]
    days = np.expm1(ex.rep_feats[rows_a, 0, 1]).round(3)
    assert days.tolist() == [31.0, 1.0, 1.0, 2.0]  # to the row's own basket time
    row_b = np.flatnonzero(ex.user_idx == model.users.index_of("b"))
    assert not ex.rep_items[row_b].any() and not ex.rep_feats[row_b].any()
    # Targets' popularity is the snapshot's: x bought once before the window.
    np.testing.assert_allclose(ex.target_pop[rows_a[0]], np.log1p([1, 1]), rtol=1e-6)


def test_users_in_groups_give_the_same_features_as_all_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    days = pd.date_range("2020-01-01", periods=40, freq="D", tz="UTC")
    def buys(n: int, first: int) -> pd.DataFrame:
        return pd.DataFrame({"user_id": rng.choice(list("abcdefg"), n),
                             "item_id": rng.choice(list("xyz"), n),
                             "ts": rng.choice(days[first:first + 20], n), "event": "purchase"})
    profile = PurchaseProfile().update(buys(30, 0))
    window = buys(80, 20)
    whole = profile.basket_features(window, 3, _lookup)
    groups = profiles.user_groups(window, profile.pairs, 20)
    assert groups.nunique() > 3  # the small budget splits the 7 users
    monkeypatch.setattr(profiles, "MERGE_ROWS", 20)
    grouped = profile.basket_features(window, 3, _lookup)
    assert whole.items.any()
    np.testing.assert_array_equal(grouped.items, whole.items)
    np.testing.assert_array_equal(grouped.features, whole.features)


def test_groups_capped_by_rows_give_the_same_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users with few pairs each still go in groups of about GROUP_ROWS rows (a group's
    features are ~1.4 kB a row), contiguous in user order; same features as all at once."""
    rng = np.random.default_rng(4)
    days = pd.date_range("2020-01-01", periods=30, freq="D", tz="UTC")
    window = pd.DataFrame({"user_id": rng.choice([f"u{i:02d}" for i in range(30)], 120),
                           "item_id": rng.choice(list("xyz"), 120),
                           "ts": rng.choice(days, 120), "event": "purchase"})
    profile = PurchaseProfile()
    whole = profile.basket_features(window, 3, _lookup)
    groups = profiles.user_groups(window, profile.pairs, 10**9, 10)
    assert profiles.user_groups(window, profile.pairs, 10**9).nunique() == 1
    assert groups.is_monotonic_increasing and groups.nunique() > 5
    sizes = window["user_id"].map(groups).value_counts()
    assert sizes.max() <= 10 + window["user_id"].value_counts().max()
    monkeypatch.setattr(profiles, "GROUP_ROWS", 10)
    parts = list(profile.basket_feature_groups(window, 3, _lookup))
    assert len(parts) == groups.nunique()
    grouped = profile.basket_features(window, 3, _lookup)
    assert whole.items.any()
    np.testing.assert_array_equal(grouped.items, whole.items)
    np.testing.assert_array_equal(grouped.features, whole.features)


def test_a_heavy_users_baskets_go_in_chunks_with_the_same_features(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One user alone over the merge budget (each basket pairs with all of the user's rows):
    their baskets go in runs within the budget, whole baskets, in (user, time) order, and
    every row's features are those of all at once."""
    rng = np.random.default_rng(6)
    days = pd.date_range("2020-01-01", periods=60, freq="D", tz="UTC")
    profile = PurchaseProfile().update(pd.DataFrame(
        {"user_id": ["heavy"] * 10 + ["b"] * 3, "item_id": rng.choice(list("xyz"), 13),
         "ts": rng.choice(days[:5], 13), "event": "purchase"}))
    window = pd.DataFrame({"user_id": ["a"] * 4 + ["heavy"] * 90 + ["b"] * 6,
                           "item_id": rng.choice(list("xyzw"), 100),
                           "ts": np.r_[rng.choice(days[5:], 4), np.sort(rng.choice(days[5:], 90)),
                                       rng.choice(days[5:], 6)], "event": "purchase"})
    window = window.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    whole = profile.basket_features(window, 3, _lookup)
    heavy = window[window["user_id"] == "heavy"]
    chunks = profiles.basket_chunks(heavy, profile.pairs, 500)
    baskets = heavy.groupby("ts").ngroups
    assert len(chunks) == -(-baskets * (90 + profile.pairs["user_id"].eq("heavy").sum()) // 500)
    assert np.concatenate(chunks).tolist() == list(range(90))  # ascending, every row once
    for part in chunks:  # whole baskets: no timestamp in two runs
        assert not set(heavy["ts"].iloc[part]) & set(heavy["ts"].drop(heavy.index[part]))
    assert profiles.basket_chunks(heavy, profile.pairs, 10**9)[0].tolist() == list(range(90))
    monkeypatch.setattr(profiles, "MERGE_ROWS", 500)
    parts = list(profile.basket_feature_groups(window, 3, _lookup))
    assert len(parts) > len(chunks)  # a, b and the heavy user's runs
    assert np.concatenate([at for at, _ in parts]).tolist() == list(range(len(window)))
    chunked = profile.basket_features(window, 3, _lookup)
    assert whole.items.any()
    np.testing.assert_array_equal(chunked.items, whole.items)
    np.testing.assert_array_equal(chunked.features, whole.features)


def test_features_written_in_place_land_at_the_given_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-place form (no full-size copy of a window's repeat arrays) fills exactly the
    rows named, in groups too, and leaves every other row zero."""
    rng = np.random.default_rng(5)
    days = pd.date_range("2020-01-01", periods=30, freq="D", tz="UTC")
    profile = PurchaseProfile().update(pd.DataFrame(
        {"user_id": rng.choice(list("abcd"), 20), "item_id": rng.choice(list("xyz"), 20),
         "ts": rng.choice(days[:10], 20), "event": "purchase"}))
    window = pd.DataFrame({"user_id": rng.choice(list("abcd"), 40),
                           "item_id": rng.choice(list("xyz"), 40),
                           "ts": rng.choice(days[10:], 40), "event": "purchase"})
    alone = profile.basket_features(window, 3, _lookup)
    positions = np.arange(len(window)) * 2 + 1
    out = RepeatFeatures(np.zeros((2 * len(window) + 1, 3), dtype=np.int64),
                         np.zeros((2 * len(window) + 1, 3, len(REPEAT_FEATURES)),
                                  dtype=np.float32))
    monkeypatch.setattr(profiles, "MERGE_ROWS", 15)
    filled = profile.basket_features(window, 3, _lookup, out, positions)
    assert filled is out and alone.items.any()
    np.testing.assert_array_equal(out.items[positions], alone.items)
    np.testing.assert_array_equal(out.features[positions], alone.features)
    assert not out.items[::2].any() and not out.features[::2].any()
    with pytest.raises(ValueError, match="positions"):
        profile.basket_features(window, 3, _lookup, out, positions[:-1])


def test_evaluation_features_come_from_the_snapshot_before_the_window() -> None:
    model = _model().eval()
    history = PurchaseHistory(3).update(_buys([("a", "x", "2020-01-01")]))
    rep = history.profile.repeat_features(["a"], 4, model.items.lookup)
    # The evaluated window's purchases are not in the history passed to evaluation.
    assert rep.items.tolist() == [[model.items.index_of("x"), 0, 0, 0]]
    assert np.expm1(rep.features[0, 0, 0]) == pytest.approx(1.0)


def test_log_q_counts_in_batch_targets_and_uniform_negatives() -> None:
    model = _model()
    window = _buys([("a", "x", "2020-02-01"), ("b", "x", "2020-02-02"),
                    ("a", "y", "2020-02-03"), ("b", "z", "2020-02-04")])
    none = np.zeros(0, dtype=np.float32)
    fraud = FraudExamples(np.zeros((0, 0), np.float32), none, none.astype(np.int64),
                          np.zeros((0, 3), np.int64), none.astype(np.int64), none,
                          np.zeros((0, 2), np.float32))
    examples = WindowExamples(rec_examples(model, window, PurchaseHistory(3)), fraud)
    (batch,) = list(iter_batches(examples, 1, len(model.items), 6, np.random.default_rng(0)))
    rec = batch.rec
    assert rec is not None and rec.target_logq is not None and rec.neg_logq is not None
    freq = {model.items.index_of("x"): 0.5, model.items.index_of("y"): 0.25,
            model.items.index_of("z"): 0.25}
    want = [math.log(4 * freq[int(t)] + 6 / 3) for t in rec.target_idx]
    np.testing.assert_allclose(rec.target_logq.numpy(), want, rtol=1e-6)
    want_neg = [math.log(4 * freq.get(int(n), 0.0) + 6 / 3) for n in rec.neg_idx]
    np.testing.assert_allclose(rec.neg_logq.numpy(), want_neg, rtol=1e-6)


def test_another_purchase_of_the_same_user_is_no_negative() -> None:
    model = _model()
    items = torch.tensor([1, 2, 3])
    batch = RecBatch(user_idx=torch.tensor([1, 1, 2]), hist_idx=torch.zeros(3, 3, dtype=torch.long),
                     target_idx=items)
    valid = model.rec_logits(batch).valid
    assert valid.tolist() == [[True, False, True], [False, True, True], [True, True, True]]


def test_rank_pool_puts_a_users_own_items_first_when_the_repeat_term_says_so() -> None:
    model = _model().eval()
    history = PurchaseHistory(3).update(_buys([("a", "z", "2020-01-01"),
                                               ("a", "z", "2020-01-02")]))
    pool = ["x", "y", "z"]
    matrix = torch.zeros(3, 8)
    matrix[0, 0] = 1.0  # x would win on the towers alone for a user vector along dim 0
    with torch.no_grad():
        out = model.repeat_mlp[2]
        out.bias.fill_(5.0)  # a large boost for any own past item
    ranked = rank_pool(model, ["a", "b"], [[], []], history, pool, matrix, 3)
    assert ranked[0, 0] == pool.index("z")  # a bought z before: first
    assert ranked[1, 0] != pool.index("z")  # b never did: no boost
    # Serving ranks with the same function, so the same boost applies there.
    scores = model.pool_scores(torch.zeros(1, 8), matrix, None, torch.tensor([[2, -1]]),
                               torch.zeros(1, 2, len(REPEAT_FEATURES)))
    assert scores[0].argmax().item() == 2


def test_the_repeat_index_answers_like_a_pass_over_the_asked_users() -> None:
    rng = np.random.default_rng(3)
    days = pd.date_range("2020-01-01", periods=30, freq="D").strftime("%Y-%m-%d")
    # Many equal counts and equal times, so the tie rules are exercised too.
    rows = [(f"u{rng.integers(12)}", "xyzw"[rng.integers(4)], str(days[rng.integers(30)]))
            for _ in range(200)]
    profile = PurchaseProfile().update(_buys(rows))
    index = profile.repeat_index(3, _lookup)
    asked = ["u3", "nobody", "u0", "u3", "u11", ""]
    want = profile.repeat_features(asked, 3, _lookup)
    got = index.lookup(asked)
    assert len(index) == 12
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_allclose(got.features, want.features, rtol=1e-6)
    assert got.items[0].any() and not got.items[1].any() and not got.features[5].any()
    assert profile.repeat_index(0, _lookup).lookup(["u3"]).items.shape == (1, 0)
