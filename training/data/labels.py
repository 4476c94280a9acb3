"""When fraud labels arrive: an update learns fraud only from labels it could have.

Chargebacks confirm fraud days to weeks after the payment (Dal Pozzolo et al., "Credit card
fraud detection: a realistic modeling and a novel learning strategy", TNNLS 2018; the Fraud
Detection Handbook trains on 7 days, waits a 7-day delay, tests on the next 7). With
``label_delay`` d, the update at the end of window t knows the labels of the transactions
of windows <= t - d: it trains, replays and gates fraud on those, while recommendation learns
from window t's interactions at once. Evaluation still scores every window's transactions
against their eventual labels (the prequential test is retrospective).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from training.data.schema import WindowData
from training.data.window_set import window_ids


def labels_arrived(windows: Sequence[WindowData], window: WindowData, delay: int) -> WindowData:
    """``window`` as an update at its end sees it: its items and interactions, and the
    transactions whose labels have arrived, which are those of the window ``delay`` windows
    earlier (none during the first ``delay`` windows). ``delay`` 0: ``window`` itself."""
    if delay == 0:
        return window
    ids = window_ids(windows)
    if window.window_id not in ids:
        raise ValueError(f"label_delay: window {window.window_id} is not one of the source's")
    pos = ids.index(window.window_id)
    if pos < delay:
        return WindowData(window.window_id, window.items, window.interactions,
                          window.transactions.iloc[0:0])
    earlier = windows[pos - delay]
    # The earlier window's items too: its transactions may name them (newest title wins).
    items = pd.concat([earlier.items, window.items], ignore_index=True).drop_duplicates(
        "item_id", keep="last").reset_index(drop=True)
    return WindowData(window.window_id, items, window.interactions, earlier.transactions)


def known_at(windows: Sequence[WindowData], delay: int) -> list[WindowData]:
    """``windows`` (a prefix of the source, oldest first) as known at the end of the last:
    each with the transactions whose labels have arrived by then, so that together they
    hold the transactions of all but the last ``delay`` windows, each once."""
    return [labels_arrived(windows, w, delay) for w in windows]
