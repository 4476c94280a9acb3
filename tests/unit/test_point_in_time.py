"""Each purchase's point-in-time history (training.features.point_in_time) and the stable
Arrow sorts it rests on (training.features.history.sorted_rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.features import point_in_time as point_in_time_module
from training.features.history import PurchaseHistory, sorted_rows
from training.features.point_in_time import (
    history_rows,
    point_in_time,
    run_starts,
    value_changes,
)
from training.model import IdMap

pytestmark = pytest.mark.unit


def sorted_buyers(rng: np.random.Generator, n: int, users: int, days: int) -> pd.DataFrame:
    """``n`` purchases (user, day) of ``users`` users over ``days`` days, sorted by user and
    time: many share a basket's time."""
    return pd.DataFrame({
        "user_id": rng.choice([f"u{i}" for i in range(users)], n),
        "ts": pd.to_datetime(rng.integers(0, days, n), unit="D", utc=True),
    }).sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)


def test_history_rows_are_each_users_purchases_before_the_basket() -> None:
    """history_rows against its definition, on random sorted purchases with shared-basket
    timestamps: a row's history is its user's items bought strictly before its basket's
    time, most recent last, left-padded with 0; only the asked rows are built."""
    rng = np.random.default_rng(0)
    n, length = 400, 4
    frame = sorted_buyers(rng, n, 12, 30)
    items = rng.integers(1, 50, n)
    rows = np.sort(rng.choice(n, 150, replace=False))
    got = history_rows(frame, items, length, rows)
    assert got.shape == (150, length)
    for out, r in zip(got, rows):
        before = (frame["user_id"] == frame["user_id"][r]) & (frame["ts"] < frame["ts"][r])
        want = items[before.to_numpy()][-length:]
        assert out.tolist() == [0] * (length - len(want)) + want.tolist()
    assert (got == 0).any() and (got[:, -1] > 0).any()


def test_sorted_rows_and_run_starts_match_pandas_on_ties_and_a_row_subset() -> None:
    """sorted_rows (Arrow's stable sort, one take) gives what pandas' stable sort_values
    gives, ties kept in input order, on all rows or a subset; value_changes/run_starts give
    each row its run's first position, as a groupby's cumcount does on sorted rows."""
    rng = np.random.default_rng(1)
    n = 3_000
    frame = pd.DataFrame({
        "user_id": pd.Series(rng.choice([f"u{i}" for i in range(40)], n), dtype="str"),
        "item_id": pd.Series(rng.choice([f"i{i}" for i in range(90)], n), dtype="str"),
        "ts": pd.to_datetime(rng.integers(0, 9, n), unit="D", utc=True).astype(
            "datetime64[us, UTC]"),
        "_new": rng.random(n) < 0.5,
    })
    keys = ["user_id", "ts", "_new"]
    pd.testing.assert_frame_equal(
        sorted_rows(frame, keys),
        frame.sort_values(keys, kind="stable").reset_index(drop=True))
    rows = np.flatnonzero(rng.random(n) < 0.3)
    pd.testing.assert_frame_equal(
        sorted_rows(frame, ["user_id", "ts"], rows),
        frame.iloc[rows].sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True))
    ordered = sorted_rows(frame, keys)
    row = np.arange(n)
    first = run_starts(value_changes(ordered["user_id"]))
    basket = run_starts(value_changes(ordered["user_id"]) | value_changes(ordered["ts"]))
    assert first.tolist() == (row - ordered.groupby("user_id", sort=False).cumcount()).tolist()
    assert basket.tolist() == (
        row - ordered.groupby(["user_id", "ts"], sort=False).cumcount()).tolist()
    assert run_starts(value_changes(ordered["user_id"].iloc[:0])).tolist() == []


def test_history_rows_built_in_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """history_rows builds a block of rows at a time: small blocks give the same matrix."""
    rng = np.random.default_rng(2)
    n = 500
    frame = sorted_buyers(rng, n, 15, 20)
    items = rng.integers(1, 30, n)
    rows = np.sort(rng.choice(n, 300, replace=False))
    whole = history_rows(frame, items, 5, rows)
    monkeypatch.setattr(point_in_time_module, "HISTORY_BLOCK", 7)
    np.testing.assert_array_equal(history_rows(frame, items, 5, rows), whole)
    assert (whole > 0).sum() > 500


def test_point_in_time_sees_stored_and_new_purchases_before_each_basket() -> None:
    """point_in_time against its definition, with a stored history (some buyers known,
    some not, replayed copies of stored rows in the window, shared-basket times): each new
    purchase's history is its user's stored and new purchases strictly before it, most
    recent last (ties in stored-then-window order); its items and positions line up."""
    rng = np.random.default_rng(3)
    lookup = IdMap([f"i{i}" for i in range(25)])
    users = [f"u{i}" for i in range(12)]

    def buys(n: int, days: tuple[int, int]) -> pd.DataFrame:
        return pd.DataFrame({
            "user_id": pd.Series(rng.choice(users, n), dtype="str"),
            "item_id": pd.Series(rng.choice([f"i{i}" for i in range(25)], n), dtype="str"),
            "ts": pd.to_datetime(rng.integers(*days, n), unit="D", utc=True).astype(
                "datetime64[us, UTC]")})

    stored = buys(120, (0, 10))
    stored = stored[stored["user_id"] != "u11"]  # a buyer with nothing stored
    history = PurchaseHistory(50).update(stored.assign(event="purchase", quantity=1,
                                                       price=1.0))
    window = pd.concat([buys(200, (8, 20)), stored.iloc[:15]], ignore_index=True)
    new = sorted_rows(window, ["user_id", "ts"])
    length = 6
    hist, items, rows = point_in_time(new, history, lookup.lookup, length)
    assert hist.shape == (len(new), length) and len(items) == len(rows) == len(new)
    assert items.tolist() == lookup.lookup(new["item_id"]).tolist()
    assert (np.diff(rows) > 0).all()
    known = history.frame.merge(new[["user_id", "item_id", "ts"]].drop_duplicates(),
                                how="left", indicator=True)
    known = known[known["_merge"] == "left_only"]
    every = pd.concat([known[["user_id", "item_id", "ts"]], new], ignore_index=True)
    every = every.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    for out, (_, row) in zip(hist, new.iterrows()):
        before = every[(every["user_id"] == row["user_id"]) & (every["ts"] < row["ts"])]
        want = lookup.lookup(before["item_id"])[-length:].tolist()
        assert out.tolist() == [0] * (length - len(want)) + want
    assert (hist[:, -1] > 0).sum() > 100
