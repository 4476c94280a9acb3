"""Load UCI Online Retail CSVs (one file or a folder of daily files) into shop tables.

Input is the data exactly as published: columns ``InvoiceNo, StockCode, Description,
Quantity, InvoiceDate, UnitPrice, CustomerID, Country``, every field read as text.

Rows become ``interactions`` (``user_id`` = CustomerID without its ``.0``, ``item_id`` =
StockCode, ``ts`` = InvoiceDate taken as UTC, ``event`` = ``purchase``, ``quantity``,
``price`` = UnitPrice). A cancellation (InvoiceNo starting with ``C``, negative Quantity)
becomes a ``return`` with a positive quantity and is counted under ``cancellation``.
``transactions`` is empty: the data has no fraud label.

Rows that cannot become interactions are quarantined, first failing reason wins:

0. ``bad_encoding``, ``bad_row``  the row could not be read: bytes that are not UTF-8, or
                           more fields than the header (see :mod:`training.data.csv_text`).
   ``overlapping_file``    from a folder, the row repeats a row of an earlier file in every
                           column (the whole-data file beside its daily slices); it is
                           not counted twice, as a purchase nor in an item's title or price.
1. ``bad_type``            Quantity not an integer, UnitPrice not a finite number, or
                           InvoiceDate not a date.
2. ``missing_id``          empty InvoiceNo or StockCode.
3. ``missing_user_id``     empty CustomerID (about a quarter of the rows).
4. ``non_product_code``    a StockCode in :data:`NON_PRODUCT_CODES` (postage, fees,
                           discounts, manual adjustments, samples) or a gift voucher
                           ``gift_0001_*``; compared case-insensitively.
5. ``missing_description`` empty Description.
6. ``odd_description``     a Description without any upper-case letter: the stock notes
                           (``?``, ``damaged``, ``thrown away``, ``found`` ...).
7. ``non_positive_price``  UnitPrice <= 0.
8. ``bad_quantity``        a sale with Quantity <= 0, or a cancellation with Quantity >= 0.

then :func:`~training.data.validate.validate` checks the interactions it built (its reasons
are added to the same counts; quarantined rows are always the raw CSV rows).

``items`` holds one row per StockCode seen on any row whose product fields are sound
(parsed, product code, usable description, price > 0), whether or not the row had a
customer, since an anonymous sale still shows the product, its title and price:
``title`` = most frequent description (ties: the one seen first), ``price`` = median
UnitPrice, ``first_seen`` = earliest InvoiceDate, ``category`` = null.

Ordering: the published daily files are read in file-name order and interactions are
then sorted by ``ts`` (stable), so published data is never quarantined for its order;
the ``ts_out_of_order`` check is meant for user-produced window files.
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
    merge_counts,
    quarantine_rows,
    reason_counts,
    validate,
)

logger = logging.getLogger(__name__)

RAW_COLUMNS: tuple[str, ...] = ("InvoiceNo", "StockCode", "Description", "Quantity",
                                "InvoiceDate", "UnitPrice", "CustomerID", "Country")
# Found by listing every StockCode that is not five digits (+ letters) in the data; the
# DCGS* codes found that way are real products (dog collars, party bags) and stay.
# CRUK, PADS and B appear only after the first three months of the full data set.
NON_PRODUCT_CODES: frozenset[str] = frozenset({
    "POST", "DOT", "M", "D", "C2", "S", "B", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE",
})
GIFT_VOUCHER_PATTERN = r"^gift_0001_"
PARSE_REASONS: tuple[str, ...] = (
    "bad_type", "missing_id", "missing_user_id", "non_product_code", "missing_description",
    "odd_description", "non_positive_price", "bad_quantity",
)
LOADER_REASONS: tuple[str, ...] = (*READ_REASONS, OVERLAP_REASON, *PARSE_REASONS)


def load_online_retail(path: str | Path) -> LoadResult:
    """Load one Online Retail CSV or a folder of daily CSVs (see the module doc)."""
    raw = read_raw(path, RAW_COLUMNS)
    parsed = _parse(raw)
    reason = raw[READ_REASON_COLUMN].to_numpy(dtype=object).copy()
    repeated = (reason == "") & repeats_earlier_file(raw, RAW_COLUMNS)
    if repeated.any():
        logger.warning("online retail %s: %d rows repeat a row of an earlier file (the "
                       "whole-data file beside its slices?); quarantined as %s", path,
                       int(repeated.sum()), OVERLAP_REASON)
    reason[repeated] = OVERLAP_REASON
    unread = reason != ""
    for name, mask in _loader_masks(parsed).items():
        reason[(reason == "") & mask] = name
    kept = np.flatnonzero(reason == "")
    candidates = _interactions(parsed, kept)
    order = np.argsort(candidates["ts"].to_numpy(dtype="datetime64[us]"), kind="stable")
    candidates, kept = candidates.iloc[order].reset_index(drop=True), kept[order]
    checked = validate("interactions", candidates, source=str(path), check_order=False)
    # validate quarantined some candidates: report them under its reason, as raw rows.
    bad = kept[checked.quarantine[ROW_NUMBER_COLUMN].to_numpy(dtype=np.int64)]
    reason[bad] = checked.quarantine[QUARANTINE_REASON_COLUMN].to_numpy()
    items = validate("items", _items(parsed, _item_rows(parsed, unread)), source=str(path))
    quarantine = _quarantine(raw, parsed, reason)
    if len(items.quarantine):  # cannot happen by construction; kept visible if it does
        quarantine = pd.concat([quarantine, items.quarantine], ignore_index=True)
    interactions = checked.valid
    counts = _counts(raw, reason, interactions, items.counts)
    logger.info("online retail %s: %s", path, counts)
    return LoadResult(items=items.valid, interactions=interactions, quarantine=quarantine,
                      counts=counts)


def _parse(raw: pd.DataFrame) -> pd.DataFrame:
    quantity = pd.to_numeric(raw["Quantity"].str.strip(), errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"].str.strip(), errors="coerce")
    ts = pd.to_datetime(raw["InvoiceDate"].str.strip(), utc=True, errors="coerce",
                        format="ISO8601").astype("datetime64[us, UTC]")
    return pd.DataFrame({
        "invoice": raw["InvoiceNo"].str.strip(),
        "code": raw["StockCode"].str.strip(),
        "title": raw["Description"].str.strip(),
        "user_id": raw["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True),
        "quantity": quantity.astype(np.float64),
        "price": price.astype(np.float64),
        "ts": ts,
    })


def _loader_masks(p: pd.DataFrame) -> dict[str, np.ndarray]:
    q, price = p["quantity"].to_numpy(), p["price"].to_numpy()
    cancel = p["invoice"].str.startswith("C").to_numpy()
    masks = {
        "bad_type": ~np.isfinite(q) | (q != np.floor(q)) | ~np.isfinite(price)
        | p["ts"].isna().to_numpy(),
        "missing_id": ((p["invoice"] == "") | (p["code"] == "")).to_numpy(),
        "missing_user_id": (p["user_id"] == "").to_numpy(),
        "non_product_code": _non_product(p["code"]),
        "missing_description": (p["title"] == "").to_numpy(),
        "odd_description": ~p["title"].str.contains("[A-Z]", regex=True).to_numpy(),
        "non_positive_price": price <= 0,
        "bad_quantity": np.where(cancel, q >= 0, q <= 0),
    }
    return {name: masks[name] for name in PARSE_REASONS}


def _non_product(code: pd.Series) -> np.ndarray:
    listed = code.str.upper().isin(NON_PRODUCT_CODES)
    voucher = code.str.contains(GIFT_VOUCHER_PATTERN, case=False, regex=True)
    result: np.ndarray = (listed | voucher).to_numpy()
    return result


def _item_rows(p: pd.DataFrame, unread: np.ndarray) -> np.ndarray:
    """Rows that were read, whose fields parse and whose product fields are sound, whatever
    their customer or quantity sign."""
    masks = _loader_masks(p)
    unsound = (unread | masks["bad_type"] | masks["missing_id"] | masks["non_product_code"]
               | masks["missing_description"] | masks["odd_description"]
               | masks["non_positive_price"])
    return np.flatnonzero(~unsound)


def _interactions(p: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    sub = p.iloc[rows]
    cancel = sub["invoice"].str.startswith("C").to_numpy()
    return pd.DataFrame({
        "user_id": sub["user_id"].to_numpy(),
        "item_id": sub["code"].to_numpy(),
        "ts": sub["ts"].reset_index(drop=True),
        "event": np.where(cancel, "return", "purchase"),
        "quantity": np.abs(sub["quantity"].to_numpy()).astype(np.int64),
        "price": sub["price"].to_numpy(),
    }).astype({"ts": "datetime64[us, UTC]"})


def _items(p: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    sub = p.iloc[rows].assign(position=rows)
    by_title = (sub.groupby(["code", "title"], sort=False)
                .agg(n=("position", "size"), first=("position", "min")).reset_index())
    titles = (by_title.sort_values(["code", "n", "first"], ascending=[True, False, True])
              .drop_duplicates("code").set_index("code")["title"])
    stats = sub.groupby("code", sort=False).agg(price=("price", "median"),
                                                first_seen=("ts", "min"),
                                                position=("position", "min"))
    stats = stats.sort_values("position")
    return pd.DataFrame({
        "item_id": stats.index.to_numpy(),
        "title": titles.reindex(stats.index).to_numpy(),
        "category": None,
        "price": stats["price"].to_numpy(),
        "first_seen": stats["first_seen"].reset_index(drop=True),
    }).astype({"first_seen": "datetime64[us, UTC]"})


def _quarantine(raw: pd.DataFrame, p: pd.DataFrame, reason: np.ndarray) -> pd.DataFrame:
    bad = np.flatnonzero(reason != "")
    if not len(bad):
        return empty_quarantine(RAW_COLUMNS)
    rows = quarantine_rows(raw[list(RAW_COLUMNS)], bad, reason[bad], raw[SOURCE_COLUMN],
                           raw[ROW_NUMBER_COLUMN].to_numpy())
    rows[EVENT_TS_COLUMN] = p["ts"].iloc[bad].to_numpy()
    return rows


def _counts(raw: pd.DataFrame, reason: np.ndarray, interactions: pd.DataFrame,
            item_counts: dict[str, int]) -> dict[str, int]:
    found = pd.Series(reason[reason != ""], dtype=object).value_counts()
    ordered = [r for r in (*LOADER_REASONS, *found.index) if r in found.index]
    counts = {"total": len(raw), VALID_KEY: len(interactions)}
    counts.update({r: int(found[r]) for r in dict.fromkeys(ordered)})
    if counts[VALID_KEY] + int(found.sum()) != len(raw):
        raise AssertionError(f"online retail counts {counts} do not add up to {len(raw)}")
    counts["cancellation"] = int((interactions["event"] == "return").sum())
    counts["items"] = item_counts[VALID_KEY]
    # By construction items cannot fail validation; if one ever does, say so in the counts.
    return merge_counts(counts, {f"items_{k}": v for k, v in reason_counts(item_counts).items()})
