"""The fraud trees' history flags (training.features.bought_before): had the user bought
anything, and the item, before the payment's window; read as of each row's own window, so
that rows of earlier windows never see purchases made after them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from training.data.sources import load_windows
from training.data.synthetic import SyntheticShopConfig
from training.features.history import PurchaseHistory
from training.features.profile import PROFILE_FILE

pytestmark = pytest.mark.unit

DAY0 = pd.Timestamp("2024-01-01", tz="UTC")  # a Monday


def bought(history: PurchaseHistory, rows: list[tuple[str, str, float | None]]) -> np.ndarray:
    """Flags for (user, item, reference day or None = after everything) rows."""
    out = []
    for user, item, day in rows:
        ts = None if day is None else pd.Series([DAY0 + pd.Timedelta(days=day)])
        out.append(history.windowed("day" if day is not None else None).bought_before(
            np.array([user], dtype=object), np.array([item], dtype=object), ts)[0])
    return np.asarray(out)


def shop(max_len: int, purchases: list[tuple[str, str, float]]) -> PurchaseHistory:
    frame = pd.DataFrame([(u, i, DAY0 + pd.Timedelta(days=d)) for u, i, d in purchases],
                         columns=["user_id", "item_id", "ts"])
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    return PurchaseHistory(max_len).update(frame.assign(event="purchase"))


def test_flags_read_the_purchases_before_the_reference_day() -> None:
    history = shop(5, [("a", "x", 1), ("a", "y", 10), ("b", "z", 12)])
    flags = bought(history, [("a", "x", 5), ("a", "y", 5), ("a", "y", 11), ("b", "z", 5),
                             ("b", "z", None), ("b", "x", None), ("c", "x", None), ("", "", 3)])
    np.testing.assert_array_equal(flags, [[1, 1], [1, 0], [1, 1], [0, 0],
                                          [1, 1], [1, 0], [0, 0], [0, 0]])
    assert flags.dtype == np.float32


def test_purchases_beyond_the_retained_ones_count() -> None:
    # Two purchases retained per user (the towers' history); the profile keeps them all.
    history = shop(2, [("d", "p", 1), ("d", "q", 2), ("d", "r", 3), ("d", "s", 4),
                       ("e", "u", 5), ("e", "u", 6), ("e", "u", 7)])
    flags = bought(history, [("d", "p", 2.5), ("d", "r", 2.5), ("e", "u", 6.5), ("e", "u", 5.5)])
    np.testing.assert_array_equal(flags, [[1, 1], [1, 0], [1, 1], [0, 0]])


def test_pairs_saved_without_first_purchases_are_unknown_unless_last_settles_it(
        tmp_path: Path) -> None:
    history = shop(5, [("a", "x", 1), ("a", "y", 10)])
    history.save(tmp_path / "history.parquet")
    profile = tmp_path / PROFILE_FILE
    pq.write_table(pq.read_table(profile).drop(["first"]), profile)  # a profile from before
    old = PurchaseHistory.load(tmp_path / "history.parquet", 5)
    assert old.profile.pairs["first"].isna().all()
    flags = bought(old, [("a", "x", 5), ("a", "y", 5), ("a", "y", None), ("b", "x", 5)])
    np.testing.assert_array_equal(flags[[0, 2, 3]], [[1, 1], [1, 1], [0, 0]])
    assert flags[1, 0] == 1 and np.isnan(flags[1, 1])  # y last bought on day 10
    # Bought again: its first purchase is still unknown, not dated from the new one.
    again = old.update(pd.DataFrame({"user_id": ["a"], "item_id": ["y"], "event": ["purchase"],
                                     "ts": [DAY0 + pd.Timedelta(days=20)]}).astype(
        {"ts": "datetime64[us, UTC]"}))
    assert np.isnan(bought(again, [("a", "y", 15)])[0, 1])
    firsts = again.profile.pairs.set_index("item_id")["first"]
    assert firsts.isna().all() and again.profile.pairs["n"].sum() == 3


def test_a_window_reads_as_of_its_own_start_not_the_payment_time() -> None:
    history = shop(5, [("a", "x", 2)])  # Wednesday of the first week
    user, item = np.array(["a"], dtype=object), np.array(["x"], dtype=object)
    friday = pd.Series([DAY0 + pd.Timedelta(days=4)])
    assert history.windowed("day").bought_before(user, item, friday).tolist() == [[1, 1]]
    assert history.windowed("week").bought_before(user, item, friday).tolist() == [[0, 0]]
    # Without a window length: as of after every stored purchase (serving, newest rows).
    assert history.bought_before(user, item, friday).tolist() == [[1, 1]]


@pytest.mark.parametrize("max_len", [50, 3])
def test_earlier_windows_read_later_histories_as_their_own(max_len: int) -> None:
    """The update scores rows of earlier windows with the history it has now: each row
    must get what the history before its own window gave (what scoring that window saw),
    whatever the towers' history keeps: never a purchase made after the window began."""
    cfg = SyntheticShopConfig(n_windows=4, interactions_per_window=600,
                              transactions_per_window=300, n_users=150, n_items=60,
                              fraud_rate=0.05)
    windows = list(load_windows("synthetic", synthetic=cfg))
    history = PurchaseHistory(max_len)
    then = []
    for w in windows:
        t = w.transactions
        then.append(history.bought_before(t["user_id"].astype(str).to_numpy(dtype=object),
                                          t["item_id"].fillna("").astype(str).to_numpy(
                                              dtype=object)))
        history = history.update(w.interactions)
    now = history.windowed(cfg.freq)
    compared = 0
    for w, expected in zip(windows, then):
        t = w.transactions
        flags = now.bought_before(t["user_id"].astype(str).to_numpy(dtype=object),
                                  t["item_id"].fillna("").astype(str).to_numpy(dtype=object),
                                  t["ts"])
        np.testing.assert_array_equal(flags, expected)
        compared += len(flags)
    assert compared > 0 and expected[:, 0].sum() > 0
    # Read as of now instead, the rows of the first windows would claim later purchases.
    flat = history.bought_before(windows[1].transactions["user_id"].astype(str).to_numpy(
        dtype=object), windows[1].transactions["item_id"].fillna("").astype(str).to_numpy(
        dtype=object))
    assert flat[:, 0].sum() > np.nansum(then[1][:, 0])
