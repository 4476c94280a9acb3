"""Each purchase's history as it stood before the purchase (point in time), at millions of
purchases.

A window's purchases and their buyers' stored earlier ones are ordered together by user and
time, and each new purchase gets the items its user bought before its basket. Only integer
keys and item indices are sorted together (Arrow's stable sort), never the rows: at millions
of purchases each copy of them is ~100 MB on the driver (issue #13).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from training.features.history import PurchaseHistory, stable_order
from training.features.repeat_plan import INDEX_DTYPE, as_index


def point_in_time(new: pd.DataFrame, history: PurchaseHistory,
                  lookup: Callable[[pd.Series], np.ndarray], length: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hist [len(new), length] item indices, the items of ``new`` as indices, the rows'
    positions among the buyers' purchases) for purchases ``new`` (sorted by user and
    time, :func:`~training.features.history.purchases`); ``lookup`` maps item ids to
    indices. The new rows keep their order (the sort is stable): row ``i`` of each array
    is ``new``'s row ``i``."""
    prior = prior_purchases(new, history)
    keys = pd.DataFrame({
        "user_id": np.concatenate(buyer_codes(new, prior)[::-1]),
        "ts": np.concatenate([prior["ts"].to_numpy(dtype="datetime64[us]"),
                              new["ts"].to_numpy(dtype="datetime64[us]")]),
        "_new": np.arange(len(prior) + len(new)) >= len(prior)})
    order = stable_order(keys, ["user_id", "ts", "_new"])
    ordered = keys.take(order).reset_index(drop=True)
    del keys
    items = np.concatenate([lookup(prior["item_id"]), lookup(new["item_id"])])[order]
    keep = ordered["_new"].to_numpy()
    rows = np.flatnonzero(keep)
    hist = history_rows(ordered, items, length, rows)
    return hist, as_index(items[keep]), rows


def buyer_codes(new: pd.DataFrame, prior: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(codes of ``new``'s buyers, codes of ``prior``'s) as int32: the rank of the user id
    among ``new``'s (sorted by user), so codes sort and compare as the ids do, without a
    copy of the ids. Every buyer in ``prior`` is one of ``new``'s."""
    changes = value_changes(new["user_id"])
    new_codes = (np.cumsum(changes, dtype=np.int64) - 1).astype(np.int32)
    if not len(prior):
        return new_codes, np.zeros(0, dtype=np.int32)
    ids = pa.chunked_array(pa.array(new["user_id"])).take(np.flatnonzero(changes))
    found = pc.index_in(pa.chunked_array(pa.array(prior["user_id"])), value_set=ids)
    if found.null_count:
        raise ValueError("prior purchases: a buyer who made no new purchase")
    return new_codes, np.asarray(found, dtype=np.int32)


def prior_purchases(new: pd.DataFrame, history: PurchaseHistory) -> pd.DataFrame:
    """The stored earlier purchases of the buyers in ``new``. Replayed rows are old
    purchases that may also sit in the stored history: those copies are dropped, so every
    row sees only purchases made before it."""
    prior = history.frame[history.frame["user_id"].isin(new["user_id"].unique())]
    if prior.empty:  # no buyer seen before: nothing to drop (and no hashing of every row)
        return prior.reset_index(drop=True)
    prior = prior.merge(new[["user_id", "item_id", "ts"]].drop_duplicates(), how="left",
                        indicator=True)
    return prior[prior["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)


# Rows of history_rows built at a time.
HISTORY_BLOCK = 262_144


def history_rows(both: pd.DataFrame, items: np.ndarray, length: int, rows: np.ndarray
                 ) -> np.ndarray:
    """[len(rows), length] item indices (0 = padding): for each of ``rows`` of ``both``
    (purchases sorted by user and time, item indices ``items``), the ``length`` purchases
    its user made before its basket, most recent last.

    A basket's lines share a timestamp: each line's query is what the user bought before
    the basket, as at evaluation and serving time (not the basket's other lines). Only the
    asked rows are built, from integer positions: at millions of purchases a matrix over
    every row, or the user ids as Python strings, would each cost hundreds of MB.
    """
    new_user = value_changes(both["user_id"])
    first = run_starts(new_user)[rows]
    basket = run_starts(new_user | value_changes(both["ts"]))[rows]
    del new_user
    hist = np.zeros((len(rows), length), dtype=INDEX_DTYPE)
    # A block of rows at a time: each lag's temporaries are a few MB, not 8 B a purchase.
    for at in range(0, len(rows), HISTORY_BLOCK):
        part = slice(at, at + HISTORY_BLOCK)
        for lag in range(1, length + 1):
            src = basket[part] - lag
            hist[part, length - lag] = np.where(src >= first[part], items[np.maximum(src, 0)],
                                                0)
    return hist


def value_changes(column: pd.Series) -> np.ndarray:
    """Rows whose value differs from the row before (the first row counts as a change),
    compared in Arrow: no hash table and no Python object per row, as a groupby of
    millions of string ids would need."""
    values = pa.chunked_array(pa.array(column))
    changed = np.ones(len(values), dtype=bool)
    if len(values) > 1:
        differs = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
        changed[1:] = differs.fill_null(True).to_numpy()
    return changed


def run_starts(changed: np.ndarray) -> np.ndarray:
    """Each row's position of the first row of its run (runs start where ``changed``), as
    int32 where the rows fit (half the bytes a purchase)."""
    dtype = np.int32 if len(changed) < np.iinfo(np.int32).max else np.int64
    row = np.arange(len(changed), dtype=dtype)
    return np.maximum.accumulate(np.where(changed, row, 0)) if len(row) else row
