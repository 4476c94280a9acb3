"""When fraud labels arrive: an update learns fraud only from labels it could have.

Chargebacks confirm fraud days to weeks after the payment (Dal Pozzolo et al., "Credit card
fraud detection: a realistic modeling and a novel learning strategy", TNNLS 2018; the Fraud
Detection Handbook trains on 7 days, waits a 7-day delay, tests on the next 7). With
``label_delay`` d, the update at the end of window t knows the labels of the transactions
of windows <= t - d: it trains, replays and gates fraud on those, while recommendation learns
from window t's interactions at once. Evaluation still scores every window's transactions
against their eventual labels (the prequential test is retrospective).

Some labels come sooner: investigators confirm the alerts they work within hours, and some
chargebacks are quick. A transactions table may say so in its optional ``label_ts`` column
(when the label became known; blank = at the delay). A label then arrives at the end of
the first window whose end is after ``label_ts``, and never later than d windows after its
own window: d is the horizon by which every label is known. Each label arrives once, so
the update at window t learns the rows that arrive at t — early ones of windows t - d + 1 ..
t, and the rest of window t - d — and the windows known at t hold each label at most once.

Early labels are a biased sample (chargebacks confirm frauds, analysts confirm the top of
the queue), so they train but never judge: the held-out tail that gates an update and fits
its calibration and thresholds is the last part of window t - d by time, complete, and an
early label that falls in its window's future tail waits for the horizon
(:func:`split_arrived`, ``tail_frac``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.data.schema import LABEL_TS_COLUMN, WindowData
from training.data.split import split_holdout, tail_cut
from training.data.window_set import window_ids
from training.data.windows import window_bounds


class LabelArrivalError(ValueError):
    """Label arrival times that cannot be placed; the message names the setting."""


def window_end(window_id: str, freq: str | None) -> pd.Timestamp:
    """The end of a window, where a ``label_ts`` must be compared with it."""
    if freq is None:
        raise LabelArrivalError(f"{LABEL_TS_COLUMN}: window {window_id} has label arrival "
                                "times but the windows' freq is unknown")
    return window_bounds(window_id, freq)[1]  # type: ignore[arg-type]


def freq_of(windows: Sequence[WindowData], freq: str | None) -> str | None:
    """``freq`` if given, else the window set's own (None for a plain list)."""
    return freq if freq is not None else getattr(windows, "freq", None)


def early(transactions: pd.DataFrame) -> pd.Series:
    """Each row's ``label_ts`` (NaT where the label comes at the delay)."""
    if LABEL_TS_COLUMN not in transactions.columns:
        return pd.Series(pd.NaT, index=transactions.index, dtype="datetime64[us, UTC]")
    return pd.to_datetime(transactions[LABEL_TS_COLUMN], utc=True)


def deferred(transactions: pd.DataFrame, tail_frac: float) -> np.ndarray:
    """Rows in their window's held-out fraud tail (its last ``tail_frac`` of transactions by
    time): an early label there waits for the horizon, so that the update which holds the
    window's tail out judges on all of it, none of it trained on before."""
    cut = tail_cut(transactions, tail_frac) if tail_frac else None
    if cut is None:
        return np.zeros(len(transactions), dtype=bool)
    return (transactions["ts"] >= cut).to_numpy()


def arriving(transactions: pd.DataFrame, first: bool, last: bool, ids: Sequence[str],
             pos: int, freq: str | None, tail_frac: float) -> pd.DataFrame:
    """The rows of one window whose labels arrive at the end of window ``pos``: of window
    pos - d (``first``) those not arrived before (the horizon); of a later window those
    whose ``label_ts`` falls before the end of ``pos`` and, but for window ``pos`` itself
    (``last``), not before the end of pos - 1; a row in its window's tail only at the
    horizon (:func:`deferred`)."""
    when = early(transactions)
    if not when.notna().any():
        rows = transactions if first else transactions.iloc[0:0]
    else:
        wait = deferred(transactions, tail_frac)
        if first:
            came = (when < window_end(ids[pos - 1], freq)).to_numpy() & ~wait
            rows = transactions[~came]
        else:
            now = (when < window_end(ids[pos], freq)).to_numpy() & ~wait
            if not last:
                now = now & ~(when < window_end(ids[pos - 1], freq)).to_numpy()
            rows = transactions[now]
    # Once arrived a label is just a label: the arrival time is not carried on.
    return rows.drop(columns=[LABEL_TS_COLUMN], errors="ignore")


def may_arrive_early(windows: Sequence[WindowData], index: int) -> bool:
    """Whether window ``index``'s transactions have label arrival times (a stored window's
    file schema says so without reading it)."""
    columns = getattr(windows, "transaction_columns", None)
    found = columns(index) if columns else list(windows[index].transactions.columns)
    return LABEL_TS_COLUMN in found


def labels_arrived(windows: Sequence[WindowData], window: WindowData, delay: int,
                   freq: str | None = None, *, tail_frac: float) -> WindowData:
    """``window`` as an update at its end sees it: its items and interactions, and the
    transactions whose labels arrive then (see the module doc; none during the first
    ``delay`` windows unless some arrive early), the horizon window's first. ``delay`` 0:
    ``window`` itself. ``freq`` (default: the windows' own) places ``label_ts`` in windows;
    ``tail_frac``: the held-out share, whose early labels wait (:func:`deferred`); no
    default, so no caller forgets that its tail's early labels must not train."""
    if delay == 0:
        return window
    ids = window_ids(windows)
    if window.window_id not in ids:
        raise ValueError(f"label_delay: window {window.window_id} is not one of the source's")
    freq = freq_of(windows, freq)
    pos = ids.index(window.window_id)
    parts, items = [], []
    for s in range(max(0, pos - delay), pos + 1):
        if 0 < pos - s < delay and not may_arrive_early(windows, s):
            continue  # a window in between passes on only early labels: none here
        source = window if s == pos else windows[s]
        parts.append(arriving(source.transactions, s == pos - delay, s == pos, ids, pos, freq,
                              tail_frac))
        items.append(source.items)
    # The earlier windows' items too: their transactions may name them (newest title wins).
    merged = pd.concat(items, ignore_index=True).drop_duplicates(
        "item_id", keep="last").reset_index(drop=True)
    rows = [p for p in parts if len(p)] or parts[:1]
    return WindowData(window.window_id, merged, window.interactions,
                      pd.concat(rows, ignore_index=True))


def known_at(windows: Sequence[WindowData], delay: int, freq: str | None = None, *,
             tail_frac: float) -> list[WindowData]:
    """``windows`` (a prefix of the source, oldest first) as known at the end of the last:
    each with the transactions whose labels arrived at its end, so that together they hold
    every label that had arrived by then, each once."""
    return [labels_arrived(windows, w, delay, freq, tail_frac=tail_frac) for w in windows]


def split_arrived(windows: Sequence[WindowData], arrived: WindowData, delay: int,
                  frac: float, freq: str | None = None) -> tuple[WindowData, WindowData]:
    """(train part, held-out tail) of what an update at ``arrived``'s end knows
    (:func:`labels_arrived` with ``tail_frac=frac``). Under a delay the fraud tail is the
    last ``frac`` of window t - d's transactions, all of them: the rows a risk team scores
    are a window's, not a sample chosen by how soon labels came (early labels are mostly
    frauds and alerts, and would tilt calibration and thresholds). Labels that came early
    from later windows train."""
    if delay == 0:
        return split_holdout(arrived, frac)
    ids = window_ids(windows)
    pos = ids.index(arrived.window_id)
    freq = freq_of(windows, freq)
    txns = arrived.transactions
    cut = tail_cut(windows[pos - delay].transactions, frac) if pos >= delay else None
    if cut is not None:
        end = window_end(ids[pos - delay], freq) if freq else pd.Timestamp.max.tz_localize("UTC")
        bounds: tuple[pd.Timestamp, pd.Timestamp] | None = (cut, end)
    else:  # no window's labels are complete yet: whatever came early trains, none judges
        bounds = (txns["ts"].min(), txns["ts"].min()) if len(txns) else None
    return split_holdout(arrived, frac, per_table=True, txn_bounds=bounds)
