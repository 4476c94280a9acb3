"""Choosing the next window and holding out its tail for the promotion gate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.cli import ConfigError
from training.data.schema import WindowData
from training.data.window_set import window_ids


def choose_window(windows: Sequence[WindowData], requested: str | None,
                  after: str | None) -> WindowData:
    """The requested window, else the first one after ``after``: the window of the training
    head (the newest version that has seen every window so far, see ``training.update.head``)."""
    ids = window_ids(windows)
    if requested is not None:
        if requested not in ids:
            raise ConfigError(f"window: {requested!r} is not among the source's windows {ids}")
        return windows[ids.index(requested)]
    later = [pos for pos, wid in enumerate(ids) if after is None or wid > after]
    if not later:
        raise ConfigError(f"window: no window after the training head's {after!r} "
                          f"(windows: {ids}); nothing new to train on")
    return windows[later[0]]


def _restrict_items(window: WindowData, inter: pd.DataFrame, txns: pd.DataFrame,
                    in_range: pd.Series) -> pd.DataFrame:
    """Items referenced by the rows, plus items first seen in the part's time range."""
    used = set(inter["item_id"]) | set(txns["item_id"].dropna() if "item_id" in txns else [])
    items = window.items
    return items[items["item_id"].isin(used) | in_range].reset_index(drop=True)


def cut_rows(frame: pd.DataFrame, cut: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows before ``cut``, rows at or after it), each in the frame's order. A window's
    tables are sorted by ``ts`` (:func:`training.data.windows.split_windows`): then the two
    parts are slices that share the window's memory (copy-on-write) instead of copies of
    it, which at millions of rows is most of what the driver holds."""
    late = (frame["ts"] >= cut).to_numpy()
    if frame["ts"].is_monotonic_increasing:
        at = int(np.argmax(late)) if late.any() else len(frame)
        return frame.iloc[:at].reset_index(drop=True), frame.iloc[at:].reset_index(drop=True)
    return frame[~late].reset_index(drop=True), frame[late].reset_index(drop=True)


def tail_cut(transactions: pd.DataFrame, frac: float) -> pd.Timestamp | None:
    """Where a window's held-out fraud tail starts: the time quantile ``1 - frac`` of its
    transactions (None without transactions)."""
    return transactions["ts"].quantile(1 - frac) if len(transactions) else None


def split_holdout(window: WindowData, frac: float, per_table: bool = False,
                  txn_bounds: tuple[pd.Timestamp, pd.Timestamp] | None = None
                  ) -> tuple[WindowData, WindowData]:
    """(train part, held-out tail): rows at or after the time quantile ``1 - frac`` of the
    window's rows, or with ``per_table`` of each table's own rows (transactions whose
    labels arrived late come from an earlier window: a joint cut would hold none out).
    ``txn_bounds`` (start, end): the transactions held out are those in ``[start, end)``
    instead (``training.data.labels.split_arrived``: labels that came early train)."""
    stamps = pd.concat([window.interactions["ts"], window.transactions["ts"]])
    if stamps.empty and per_table:  # nothing has arrived yet (--label-delay): nothing to hold out
        return window, WindowData(f"{window.window_id}/holdout", window.items.iloc[0:0],
                                  window.interactions, window.transactions)
    if stamps.empty:
        raise ConfigError(f"window: {window.window_id} has no interactions or transactions")
    cut = stamps.quantile(1 - frac)
    inter, txns = window.interactions, window.transactions
    cut_t = tail_cut(txns, frac) if per_table and len(txns) else cut
    if per_table and len(inter):
        cut = inter["ts"].quantile(1 - frac)
    train_i, hold_i = cut_rows(inter, cut)
    if txn_bounds is not None and len(txns) and (txns["ts"] >= txn_bounds[1]).any():
        held = ((txns["ts"] >= txn_bounds[0]) & (txns["ts"] < txn_bounds[1])).to_numpy()
        train_t, hold_t = (txns[~held].reset_index(drop=True),
                           txns[held].reset_index(drop=True))
    else:
        train_t, hold_t = cut_rows(txns, cut_t if txn_bounds is None else txn_bounds[0])
    early = window.items["first_seen"] < cut
    train = WindowData(window.window_id, _restrict_items(window, train_i, train_t, early),
                       train_i, train_t)
    hold = WindowData(f"{window.window_id}/holdout",
                      _restrict_items(window, hold_i, hold_t, ~early), hold_i, hold_t)
    return train, hold
