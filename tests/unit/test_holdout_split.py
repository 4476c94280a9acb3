"""The held-out tail of a window: the same rows whether its tables are sorted or not, and
no second copy of a sorted window's rows on the driver (#13)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data.schema import WindowData
from training.data.split import cut_rows, split_holdout

pytestmark = pytest.mark.unit


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": pd.array([f"u{i}" for i in rng.integers(0, 9, n)], dtype="str"),
        "item_id": pd.array([f"i{i}" for i in rng.integers(0, 9, n)], dtype="str"),
        "ts": pd.to_datetime(rng.integers(0, 10_000, n), unit="s", utc=True),
        "event": "purchase", "quantity": rng.integers(1, 5, n), "price": rng.random(n)})


def _by_mask(frame: pd.DataFrame, cut: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    late = frame["ts"] >= cut
    return frame[~late].reset_index(drop=True), frame[late].reset_index(drop=True)


@pytest.mark.parametrize("sort", [True, False])
def test_cut_rows_gives_the_masks_rows_in_order(sort: bool) -> None:
    frame = _table(500, 1)
    if sort:
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    for cut in (frame["ts"].quantile(0.8), frame["ts"].min(), frame["ts"].max(),
                frame["ts"].max() + pd.Timedelta(1, "s")):
        for got, want in zip(cut_rows(frame, cut), _by_mask(frame, cut)):
            pd.testing.assert_frame_equal(got, want)


def test_a_sorted_windows_parts_share_its_memory() -> None:
    inter = _table(2000, 2).sort_values("ts", kind="stable").reset_index(drop=True)
    window = WindowData("w", pd.DataFrame({"item_id": ["i1"], "title": ["t"],
                                           "first_seen": inter["ts"][:1]}),
                        inter, inter.iloc[0:0].assign(amount=0.0))
    train, hold = split_holdout(window, 0.2)
    assert len(train.interactions) + len(hold.interactions) == len(inter)
    assert 0 < len(hold.interactions) < len(inter)
    for part in (train, hold):
        for column in ("quantity", "price"):
            assert np.shares_memory(part.interactions[column].to_numpy(),
                                    inter[column].to_numpy())
    shuffled = inter.sample(frac=1.0, random_state=0).reset_index(drop=True)
    copied, _ = cut_rows(shuffled, inter["ts"].quantile(0.8))
    assert not np.shares_memory(copied["price"].to_numpy(), shuffled["price"].to_numpy())
