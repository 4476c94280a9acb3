"""Load the ULB credit-card fraud CSV (as published) into a transactions table.

The file has a quoted header ``"Time","V1".."V28","Amount","Class"`` and ``Class`` quoted
``"0"``/``"1"``. Each data row becomes a transaction:

- ``txn_id``   ``ulb-<row>``, ``<row>`` the 0-based data row in the file (header excluded),
  the same number the quarantine's ``row_number`` uses; from a folder of several files,
  ``ulb-<file stem>-<row>``;
- ``user_id``/``item_id`` null (the data set is anonymised);
- ``ts``       ``start`` + ``Time`` seconds;
- ``amount``   ``Amount``; ``is_fraud`` ``Class == "1"``; features ``V1``..``V28`` as named.

Rows that cannot be read are quarantined as ``bad_encoding`` or ``bad_row`` (see
:mod:`training.data.csv_text`; row numbers and ``txn_id`` of the other rows do not move),
then as ``overlapping_file`` when a folder's file repeats a row of an earlier file (in
every published column), then as ``bad_label`` when ``Class`` is neither ``0`` nor ``1``,
otherwise by
:func:`~training.data.validate.validate` (``bad_type`` for an unparseable Time, Amount or
feature; ``non_finite``; ``negative_amount``; ``duplicate_id`` cannot occur). Rows are
sorted by ``ts`` (stable) before validation, so file order never quarantines a row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.csv_text import (
    OVERLAP_REASON,
    READ_REASON_COLUMN,
    READ_REASONS,
    read_raw,
    repeats_earlier_file,
)
from training.data.validate import (
    EVENT_TS_COLUMN,
    QUARANTINE_REASON_COLUMN,
    ROW_NUMBER_COLUMN,
    SOURCE_COLUMN,
    VALID_KEY,
    LoadResult,
    empty_quarantine,
    quarantine_rows,
    validate,
)

logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = tuple(f"V{i}" for i in range(1, 29))
RAW_COLUMNS: tuple[str, ...] = ("Time", *FEATURE_COLUMNS, "Amount", "Class")
DEFAULT_START = "2013-09-01T00:00:00Z"
LOADER_REASONS: tuple[str, ...] = (*READ_REASONS, OVERLAP_REASON, "bad_label")


def parse_start(start: str) -> pd.Timestamp:
    """``start`` as a UTC timestamp (naive means UTC); ValueError naming ``start``."""
    try:
        stamp = pd.Timestamp(start)
    except ValueError as exc:
        raise ValueError(f"start: not a timestamp: {start!r}") from exc
    if stamp is pd.NaT:
        raise ValueError(f"start: not a timestamp: {start!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def load_ulb(path: str | Path, start: str = DEFAULT_START) -> LoadResult:
    """Load one ULB ``creditcard*.csv``, or every ``*.csv`` of a folder (slices of the
    published file, ``Time`` counted from the same start), as one table (see the module
    doc)."""
    origin = parse_start(start)
    raw = read_raw(path, RAW_COLUMNS)
    seconds = pd.to_numeric(raw["Time"].str.strip(), errors="coerce").astype(np.float64)
    # Beyond ~3000 years a Time is garbage, and would overflow the timestamp arithmetic.
    finite = np.isfinite(seconds.to_numpy()) & (np.abs(seconds.to_numpy()) < 1e11)
    ts = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    ts[finite] = origin + pd.to_timedelta(seconds[finite], unit="s")
    label = raw["Class"].str.strip()
    unread = raw[READ_REASON_COLUMN].to_numpy(dtype=object)
    repeated = repeats_earlier_file(raw, RAW_COLUMNS)
    reason = np.where(unread != "", unread, np.where(
        repeated, OVERLAP_REASON, np.where(label.isin(("0", "1")), "", "bad_label"))
                      ).astype(object)
    if repeated.any():
        logger.warning("ulb %s: %d rows repeat a row of an earlier file (overlapping slices "
                       "of the published file); quarantined as %s", path,
                       int(((unread == "") & repeated).sum()), OVERLAP_REASON)
    kept = np.flatnonzero(reason == "")
    # NaT sorts last; validate then quarantines those rows as bad_type.
    kept = kept[np.argsort(ts.to_numpy(dtype="datetime64[us]")[kept], kind="stable")]
    candidates = pd.DataFrame({
        "txn_id": txn_ids(raw),
        "user_id": None,
        "item_id": None,
        "ts": ts,
        "amount": raw["Amount"],
        "is_fraud": label == "1",
        **{name: raw[name] for name in FEATURE_COLUMNS},
    }).iloc[kept].reset_index(drop=True)
    checked = validate("transactions", candidates, source=str(path), check_order=False)
    bad = kept[checked.quarantine[ROW_NUMBER_COLUMN].to_numpy(dtype=np.int64)]
    reason[bad] = checked.quarantine[QUARANTINE_REASON_COLUMN].to_numpy()
    transactions = checked.valid
    counts = _counts(reason, transactions)
    logger.info("ulb %s: %s", path, counts)
    return LoadResult(transactions=transactions, quarantine=_quarantine(raw, ts, reason),
                      counts=counts)


def txn_ids(raw: pd.DataFrame) -> pd.Series:
    """``ulb-<row>``, or ``ulb-<file stem>-<row>`` when a folder holds several files (row
    numbers restart in each file; without the stem every later file's rows would be
    quarantined as duplicates of the first's)."""
    rows = raw[ROW_NUMBER_COLUMN].astype("str")
    if raw[SOURCE_COLUMN].nunique() <= 1:
        return "ulb-" + rows
    return "ulb-" + raw[SOURCE_COLUMN].str.removesuffix(".csv") + "-" + rows


def _quarantine(raw: pd.DataFrame, ts: pd.Series, reason: np.ndarray) -> pd.DataFrame:
    bad = np.flatnonzero(reason != "")
    if not len(bad):
        return empty_quarantine(RAW_COLUMNS)
    rows = quarantine_rows(raw[list(RAW_COLUMNS)], bad, reason[bad], raw[SOURCE_COLUMN],
                           raw[ROW_NUMBER_COLUMN].to_numpy())
    rows[EVENT_TS_COLUMN] = ts.iloc[bad].to_numpy(dtype="datetime64[us]")
    rows[EVENT_TS_COLUMN] = rows[EVENT_TS_COLUMN].dt.tz_localize("UTC")
    return rows


def _counts(reason: np.ndarray, transactions: pd.DataFrame) -> dict[str, int]:
    found = pd.Series(reason[reason != ""], dtype=object).value_counts()
    counts = {"total": len(reason), VALID_KEY: len(transactions)}
    counts.update({str(r): int(n) for r, n in found.items()})
    if counts[VALID_KEY] + int(found.sum()) != len(reason):
        raise AssertionError(f"ulb counts {counts} do not add up to {len(reason)}")
    counts["fraud"] = int(transactions["is_fraud"].sum())
    return counts
