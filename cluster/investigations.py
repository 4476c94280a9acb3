"""Investigated alerts: the analyst queue whose labels arrive within the window.

Under ``--label-delay`` most fraud labels come with the chargeback, windows later, but a
risk team works the top of the live model's queue at once and confirms those alerts within
hours (Dal Pozzolo et al., TNNLS 2018, call them feedbacks). With ``--investigated-share s``
the pipeline simulates that queue: after ours' live model has scored a window (the
prequential test), the top ``s`` of its labelled transactions by fraud score get a
``label_ts`` at their payment time, so the update at the end of that window learns them,
and the chargeback of the window ``label_delay`` windows later brings the rest
(``training.data.labels``: each label once). Every method learns the same arrived labels:
the labels belong to the shop, whichever model raised the alerts. Equal scores are ordered
at random (seeded by the window id): a model that has learned no fraud yet scores every
transaction alike, and its queue is then a random sample, not the table's first rows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from training.data.labels import early
from training.data.schema import LABEL_TS_COLUMN, WindowData


def investigate(window: WindowData, labels: np.ndarray, scores: np.ndarray,
                share: float) -> tuple[WindowData, dict[str, Any]]:
    """``window`` with the labels of its top ``share`` of labelled transactions by
    ``scores`` (the live model's, in the labelled rows' table order) arriving at their
    payment time (an earlier ``label_ts`` stays), and a summary of the queue. Equal scores
    in random order, the same for the same window."""
    txns = window.transactions
    labelled = np.flatnonzero(txns["is_fraud"].notna().to_numpy())
    if len(labelled) != len(scores) or len(labels) != len(scores):
        raise ValueError(f"scores: {len(scores)} for {len(labelled)} labelled transactions")
    k = min(len(scores), math.ceil(share * len(scores)))
    ties = np.random.default_rng(zlib.crc32(window.window_id.encode())).random(len(scores))
    top = labelled[np.lexsort((ties, -np.asarray(scores, dtype=np.float64)))[:k]]
    when = early(txns).copy()
    ts = pd.to_datetime(txns["ts"], utc=True)
    pick = np.zeros(len(txns), dtype=bool)
    pick[top] = True
    sooner = pick & ~(when <= ts).to_numpy()
    when[sooner] = ts[sooner]
    marked = txns.assign(**{LABEL_TS_COLUMN: when.astype("datetime64[us, UTC]")})
    frauds = int(np.asarray(labels, dtype=bool).sum())
    found = int(txns["is_fraud"].to_numpy()[top].astype(bool).sum()) if k else 0
    summary = {"share": share, "labelled": int(len(scores)), "investigated": int(k),
               "frauds_confirmed": found, "frauds": frauds}
    return WindowData(window.window_id, window.items, window.interactions, marked), summary


def investigated_lines(result: Mapping[str, Any]) -> list[str]:
    """Markdown: the simulated analyst queue, if the run had one."""
    rows = list((result.get("investigated") or {}).values())
    if not rows:
        return []
    found, frauds = sum(r["frauds_confirmed"] for r in rows), sum(r["frauds"] for r in rows)
    return [f"Investigated alerts (`--investigated-share {rows[0]['share']:g}`): the top of "
            f"ours' live queue, {sum(r['investigated'] for r in rows)} of "
            f"{sum(r['labelled'] for r in rows)} labelled transactions over {len(rows)} "
            f"windows, had their labels at once; they held {found} of the {frauds} frauds "
            f"({found / max(frauds, 1):.0%}); the rest came at the label delay.", ""]
