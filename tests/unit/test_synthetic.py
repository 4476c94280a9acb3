"""The synthetic drifting shop: determinism, schema, catalogue, drift and fraud campaigns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.cli import ConfigError
from training.data.schema import TABLE_NAMES, WindowData, empty_frame
from training.data.synthetic import (
    FRAUD_FEATURES,
    ShopSimulator,
    SimulationFinishedError,
    SyntheticShop,
    SyntheticShopConfig,
    generate,
    iter_windows,
    main,
)
from training.data.synthetic_vocab import BUDGET_WORDS, PREMIUM_WORDS, VOCABULARIES
from training.data.validate import validate
from training.data.windows import list_windows, read_window

pytestmark = pytest.mark.unit

SMALL = SyntheticShopConfig(n_users=300, n_items=120, new_items_per_window=10, n_windows=4,
                            interactions_per_window=2000, transactions_per_window=1000,
                            fraud_rate=0.02)
# Big enough that category shares and fraud medians are stable; shift at window 3.
DRIFT = SyntheticShopConfig(n_users=1500, n_items=400, new_items_per_window=20, n_windows=6,
                            interactions_per_window=8000, transactions_per_window=3000,
                            fraud_rate=0.02)
NO_SHIFT = dataclasses.replace(DRIFT, shift_window=DRIFT.n_windows)


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate(SMALL)


@pytest.fixture(scope="module")
def drift_shop() -> SyntheticShop:
    return generate(DRIFT)


@pytest.fixture(scope="module")
def still_shop() -> SyntheticShop:
    return generate(NO_SHIFT)


def bounds(window: WindowData) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(window.window_id, tz="UTC")
    return start, start + pd.Timedelta(days=7)


def category_shares(window: WindowData, categories: tuple[str, ...]) -> pd.Series:
    bought = window.interactions[window.interactions["event"] == "purchase"]
    cats = bought.merge(window.items[["item_id", "category"]], on="item_id", how="left")
    assert cats["category"].notna().all()
    return cats["category"].value_counts(normalize=True).reindex(list(categories), fill_value=0)


def tv(a: pd.Series, b: pd.Series) -> float:
    return float(0.5 * np.abs(a.to_numpy() - b.to_numpy()).sum())


def all_transactions(shop: SyntheticShop) -> pd.DataFrame:
    return pd.concat([w.transactions.assign(window=i) for i, w in enumerate(shop.windows)],
                     ignore_index=True)


def test_same_seed_gives_identical_frames(shop: SyntheticShop) -> None:
    again = generate(SMALL)
    assert [w.window_id for w in again.windows] == [w.window_id for w in shop.windows]
    for first, second in zip(shop.windows, again.windows):
        for name in TABLE_NAMES:
            pd.testing.assert_frame_equal(first.table(name), second.table(name))
    pd.testing.assert_frame_equal(shop.truth.fraud_campaigns(), again.truth.fraud_campaigns())


def test_different_seed_gives_different_frames(shop: SyntheticShop) -> None:
    other = generate(dataclasses.replace(SMALL, seed=1))
    for first, second in zip(shop.windows, other.windows):
        assert not first.interactions.equals(second.interactions)
        assert not first.transactions.equals(second.transactions)
    assert not np.array_equal(shop.truth.item_latent, other.truth.item_latent)


def test_streaming_matches_generate(shop: SyntheticShop) -> None:
    streamed = list(iter_windows(SMALL))
    assert len(streamed) == SMALL.n_windows
    for first, second in zip(shop.windows, streamed):
        for name in TABLE_NAMES:
            pd.testing.assert_frame_equal(first.table(name), second.table(name))


def test_frames_match_schema_and_pass_validation(shop: SyntheticShop) -> None:
    assert [w.window_id for w in shop.windows] == [
        "2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"]
    for window in shop.windows:
        assert window.counts()["interactions"] == SMALL.interactions_per_window
        assert window.counts()["transactions"] == SMALL.transactions_per_window
        assert window.fraud_features == list(FRAUD_FEATURES)
        for name in TABLE_NAMES:
            frame = window.table(name)
            expected = empty_frame(name, list(FRAUD_FEATURES) if name == "transactions" else None)
            assert list(frame.columns) == list(expected.columns)
            assert frame.dtypes.to_dict() == expected.dtypes.to_dict()
            result = validate(name, frame)
            assert result.counts["valid"] == len(frame), result.counts
        assert set(window.interactions["event"]) == {"view", "cart", "purchase"}
        assert "campaign" not in window.transactions.columns


def test_catalogue_launches_every_window_and_first_seen_is_consistent(
        shop: SyntheticShop) -> None:
    seen: set[str] = set()
    for index, window in enumerate(shop.windows):
        start, end = bounds(window)
        items = window.items
        assert items["item_id"].is_unique
        assert (items["first_seen"] < end).all()
        launched = items[items["first_seen"] >= start]
        assert len(launched) == (SMALL.n_items if index == 0 else SMALL.new_items_per_window)
        assert not set(launched["item_id"]) & seen
        seen |= set(launched["item_id"])
        if index:
            assert (launched["first_seen"] > start).all()  # launched during, not at, the start
        for name in ("interactions", "transactions"):
            rows = window.table(name)
            assert rows["ts"].is_monotonic_increasing
            assert ((rows["ts"] >= start) & (rows["ts"] < end)).all()
            assert set(rows["item_id"].dropna()) <= set(items["item_id"])
        joined = window.interactions.merge(items[["item_id", "first_seen"]], on="item_id")
        assert len(joined) == len(window.interactions)
        assert (joined["ts"] >= joined["first_seen"]).all()
    # New items sell in their first window: text is all a recommender knows of them.
    last = shop.windows[-1]
    new_ids = set(last.items.loc[last.items["first_seen"] >= bounds(last)[0], "item_id"])
    assert last.interactions["item_id"].isin(new_ids).sum() > 20


def test_titles_are_brand_attribute_noun_of_their_category(shop: SyntheticShop) -> None:
    items = shop.windows[0].items
    quality_words = PREMIUM_WORDS + BUDGET_WORDS
    for title, category in zip(items["title"], items["category"]):
        vocab = VOCABULARIES[category]
        brand = next(b for b in vocab.brands if title.startswith(b + " "))
        noun = next(n for n, _ in vocab.nouns if title.endswith(" " + n))
        middle = title[len(brand) + 1: len(title) - len(noun) - 1]
        assert middle in vocab.attributes or middle in quality_words, title
    word = items["title"].str.split(" ").map(set)
    premium = items[word.map(lambda w: bool(w & set(PREMIUM_WORDS)))]
    budget = items[word.map(lambda w: bool(w & set(BUDGET_WORDS)))]
    assert len(premium) > 5 and len(budget) > 5
    assert premium["price"].median() > 1.5 * budget["price"].median()


def test_item_latents_cluster_by_category(shop: SyntheticShop) -> None:
    truth = shop.truth
    latent = truth.item_latent[:, 1:]  # dimension 0 is quality, shared by all categories
    unit = latent / np.linalg.norm(latent, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = truth.item_category[:, None] == truth.item_category[None, :]
    off_diagonal = ~np.eye(len(unit), dtype=bool)
    assert cosine[same & off_diagonal].mean() > cosine[~same].mean() + 0.4


def test_users_join_over_time_and_repeat_purchases(shop: SyntheticShop) -> None:
    truth = shop.truth
    join = dict(zip(truth.user_ids, truth.user_join_window))
    bought_before: set[tuple[str, str]] = set()
    for index, window in enumerate(shop.windows):
        users = window.interactions["user_id"]
        assert all(join[u] <= index for u in users.unique())
        if index:
            newcomers = {u for u in users.unique() if join[u] == index}
            assert len(newcomers) >= 10
        bought = window.interactions[window.interactions["event"] == "purchase"]
        pairs = list(zip(bought["user_id"], bought["item_id"]))
        if index:
            repeat = np.mean([p in bought_before for p in pairs])
            assert repeat > 0.15, (index, repeat)
        bought_before |= set(pairs)
    counts = pd.concat([w.interactions["user_id"] for w in shop.windows]).value_counts()
    # Heavy-tailed activity: the busiest 5% of users make far more than 5% of the events.
    assert counts.iloc[: len(counts) // 20].sum() / counts.sum() > 0.2


def test_fraud_rate_is_close_to_config(drift_shop: SyntheticShop) -> None:
    txns = all_transactions(drift_shop)
    assert abs(txns["is_fraud"].mean() - DRIFT.fraud_rate) < 0.25 * DRIFT.fraud_rate
    truth = drift_shop.truth.fraud_campaigns()
    assert set(truth["txn_id"]) == set(txns.loc[txns["is_fraud"], "txn_id"])
    assert txns["txn_id"].is_unique


def test_category_mix_jumps_at_the_shift(drift_shop: SyntheticShop,
                                         still_shop: SyntheticShop) -> None:
    s = DRIFT.shift_at
    assert s == 3 and drift_shop.truth.shift_window_id == drift_shop.windows[s].window_id
    cats = DRIFT.categories
    shares = [category_shares(w, cats) for w in drift_shop.windows]
    adjacent_pre = tv(shares[1], shares[2])
    across = tv(shares[s - 1], shares[s + 1])
    assert adjacent_pre < 0.06
    assert across > 0.2 and across > 5 * adjacent_pre
    top3_before = set(shares[s - 1].nlargest(3).index)
    top3_after = set(shares[s + 1].nlargest(3).index)
    assert top3_before != top3_after
    assert set(DRIFT.shift_categories) <= top3_after
    # Control: the same shop without the shift only drifts gradually.
    still = [category_shares(w, cats) for w in still_shop.windows]
    assert tv(still[s - 1], still[s + 1]) < 0.08
    assert still_shop.truth.shift_window_id is None


def test_fraud_switches_from_card_testing_to_account_takeover(
        drift_shop: SyntheticShop, still_shop: SyntheticShop) -> None:
    s = DRIFT.shift_at
    txns = all_transactions(drift_shop)
    fraud = txns[txns["is_fraud"]]
    before, after = fraud[fraud["window"] < s], fraud[fraud["window"] >= s]
    assert after["amount"].median() > 5 * before["amount"].median()
    night_before = (before["ts"].dt.hour < 6).mean()
    night_after = (after["ts"].dt.hour < 6).mean()
    assert night_before > 0.4 and night_after < 0.2
    assert after["distance_from_home_km"].median() > 2 * before["distance_from_home_km"].median()
    campaigns = [w.campaign for w in drift_shop.truth.windows]
    assert campaigns == ["card_testing"] * s + ["account_takeover"] * (DRIFT.n_windows - s)
    # Card tests come in bursts from one account, minutes apart.
    truth = drift_shop.truth.fraud_campaigns().merge(txns, on="txn_id")
    tests = truth[truth["campaign"] == "card_testing"]
    per_attack = tests.groupby(["window_id", "attack_id"])
    assert (per_attack["user_id"].nunique() == 1).all()
    assert per_attack.size().median() >= 3
    assert tests["txns_last_hour"].median() >= 1
    # Control: without the shift the campaign never changes.
    still = all_transactions(still_shop)
    still_fraud = still[still["is_fraud"]]
    late = still_fraud[still_fraud["window"] >= s]["amount"].median()
    early = still_fraud[still_fraud["window"] < s]["amount"].median()
    assert late < 2 * early


def test_fraud_features_overlap_with_legit(drift_shop: SyntheticShop) -> None:
    txns = all_transactions(drift_shop)
    legit = txns[~txns["is_fraud"]]
    assert 0.03 < (legit["ts"].dt.hour < 6).mean() < 0.15
    assert 0.03 < legit["is_new_device"].mean() < 0.15
    assert (legit["distance_from_home_km"] > 100).mean() > 0.03
    assert (legit["txns_last_hour"] >= 1).mean() > 0.1
    assert (legit["amount"] < 5).mean() > 0.02


def test_truth_records_the_drift(drift_shop: SyntheticShop) -> None:
    truth = drift_shop.truth
    s = truth.shift_window
    assert [w.shifted for w in truth.windows] == [i >= s for i in range(DRIFT.n_windows)]
    pref = [w.user_pref for w in truth.windows]
    assert all(p is not None and p.shape == (DRIFT.n_users, len(DRIFT.categories)) for p in pref)
    col = DRIFT.categories.index("seasonal")
    jump = pref[s][:, col] - pref[s - 1][:, col]  # type: ignore[index]
    step = pref[s - 1][:, col] - pref[s - 2][:, col]  # type: ignore[index]
    assert abs(np.std(step) - DRIFT.drift_scale) < 0.02
    assert np.mean(jump > DRIFT.shift_boost / 2) == pytest.approx(DRIFT.shift_user_share, abs=0.05)
    scores = truth.utility(s, np.arange(5))
    assert scores.shape == (5, DRIFT.n_items + s * DRIFT.new_items_per_window)


def test_simulator_stops_after_last_window() -> None:
    sim = ShopSimulator(dataclasses.replace(SMALL, n_windows=1), keep_latents=False)
    assert len(list(sim)) == 1
    with pytest.raises(SimulationFinishedError, match="n_windows"):
        sim.step()


@pytest.mark.parametrize(("changes", "setting"), [
    ({"start": "2024-01-02"}, "start"),
    ({"start": "January"}, "start"),
    ({"freq": "month"}, "freq"),
    ({"n_users": 0}, "n_users"),
    ({"fraud_rate": 0.9}, "fraud_rate"),
    ({"categories": ("electronics", "spaceships")}, "categories"),
    ({"categories": ("electronics", "books")}, "shift_categories"),
    ({"shift_window": 7}, "shift_window"),
    ({"view_share": 0.6, "cart_share": 0.5}, "view_share"),
    ({"latent_dim": 2}, "latent_dim"),
    ({"seed": -1}, "seed"),
])
def test_config_rejects_bad_settings(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=f"^{setting}:"):
        dataclasses.replace(SMALL, **changes)


def test_day_windows_use_day_ids() -> None:
    cfg = dataclasses.replace(SMALL, freq="day", start="2024-03-09", n_windows=3)
    windows = list(iter_windows(cfg))
    assert [w.window_id for w in windows] == ["2024-03-09", "2024-03-10", "2024-03-11"]
    last = windows[-1].interactions["ts"]
    assert (last >= pd.Timestamp("2024-03-11", tz="UTC")).all()
    assert (last < pd.Timestamp("2024-03-12", tz="UTC")).all()


def test_main_writes_readable_windows_and_truth(tmp_path: Path, shop: SyntheticShop) -> None:
    out = tmp_path / "shop"
    code = main(["--out", str(out), "--n-users", "300", "--n-items", "120",
                 "--new-items-per-window", "10", "--n-windows", "4",
                 "--interactions-per-window", "2000", "--transactions-per-window", "1000",
                 "--fraud-rate", "0.02"])
    assert code == 0
    assert list_windows(out) == [w.window_id for w in shop.windows]
    for window in shop.windows:
        back = read_window(out, window.window_id)
        for name in TABLE_NAMES:
            pd.testing.assert_frame_equal(back.table(name), window.table(name))
    schedule = json.loads((out / "_truth" / "truth.json").read_text())
    assert schedule["shift_window_id"] == shop.windows[2].window_id
    assert [w["campaign"] for w in schedule["windows"]] == [
        "card_testing", "card_testing", "account_takeover", "account_takeover"]
    fraud = pd.read_parquet(out / "_truth" / "fraud_campaigns.parquet")
    pd.testing.assert_frame_equal(fraud, shop.truth.fraud_campaigns(), check_dtype=False)
