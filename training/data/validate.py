"""Row-level validation of the shared tables: every input row ends valid or quarantined.

:func:`validate` parses a frame (typed, or all strings as read from CSV) into the exact
columns and dtypes of :mod:`training.data.schema` and moves each offending row, as text,
into a quarantine frame with a stable ``reason``. It raises only for column-level
problems (:class:`SchemaError`), never for bad rows, and never drops a row silently.

Reasons, checked in this order; the first that fails names the row:

1. ``missing_id``       empty/NaN id: items ``item_id``; interactions ``user_id``/``item_id``;
                        transactions ``txn_id``.
2. ``bad_type``         a number, timestamp or boolean that does not parse (a missing
                        ``ts`` counts here too).
3. ``non_finite``       NaN/inf in ``amount``, ``quantity`` or a feature; inf in ``price``
                        (``price`` is nullable in the schema, so an empty price is a null).
4. ``negative_amount``  ``amount < 0`` or ``price < 0``.
5. ``bad_quantity``     interactions ``quantity <= 0``.
6. ``unknown_event``    ``event`` not in :data:`~training.data.schema.EVENT_TYPES`.
7. ``missing_title``    items with an empty title.
8. ``ts_out_of_order``  (``check_order=True``, tables with ``ts``) a ``ts`` earlier than the
                        running max over the earlier rows of the same frame that passed 1-7.
9. ``duplicate_id``     a ``txn_id`` (transactions) or ``item_id`` (items) already seen on an
                        earlier row that passed 1-8; the first occurrence stays valid.

Columns: non-nullable schema columns are required; nullable ones (``category``, ``price``,
``user_id``/``item_id``/``is_fraud`` of transactions) are filled with nulls when absent.
Items/interactions drop extra columns; in transactions every extra column is a float64
feature, kept in input order.

A quarantine frame holds the offending input rows with every column as text, plus
``reason``, ``source`` (where the frame came from) and ``row_number`` (0-based position in
the frame or file, header excluded). Loaders may add ``event_ts`` (the row's time when it
parsed) so quarantined rows can be filed into windows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.schema import (
    EVENT_TYPES,
    LABEL_TS_COLUMN,
    QUARANTINE_REASON_COLUMN,
    empty_frame,
    schema_for,
    transaction_feature_columns,
)

logger = logging.getLogger(__name__)

REASONS: tuple[str, ...] = (
    "missing_id", "bad_type", "non_finite", "negative_amount", "bad_quantity",
    "unknown_event", "missing_title", "ts_out_of_order", "duplicate_id",
)
SOURCE_COLUMN = "source"
ROW_NUMBER_COLUMN = "row_number"
EVENT_TS_COLUMN = "event_ts"
# Keys of a counts dict that are not quarantine reasons.
TOTAL_KEY = "total"
VALID_KEY = "valid"

_ID_COLUMNS = {"items": ("item_id",), "interactions": ("user_id", "item_id"),
               "transactions": ("txn_id",)}
_UNIQUE_COLUMN = {"items": "item_id", "transactions": "txn_id"}
_NAN_WORDS = ("nan", "+nan", "-nan")
_TRUE_WORDS = ("1", "true", "t", "yes")
_FALSE_WORDS = ("0", "false", "f", "no")


class SchemaError(ValueError):
    """A frame lacks required columns (or has a column of the wrong kind); names them."""


@dataclass
class ValidationResult:
    """Outcome of :func:`validate`: schema-exact valid rows, quarantined rows, counts."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]


@dataclass
class LoadResult:
    """What a source loader returns; any table may be an empty schema frame.

    ``counts`` partitions the raw rows: ``total == valid + sum(reasons)``, where ``valid``
    counts raw rows that became rows of the source's event table. Loaders add a few
    informational keys beside them (listed in :data:`INFO_KEYS`).
    """

    items: pd.DataFrame = field(default_factory=lambda: empty_frame("items"))
    interactions: pd.DataFrame = field(default_factory=lambda: empty_frame("interactions"))
    transactions: pd.DataFrame = field(default_factory=lambda: empty_frame("transactions"))
    quarantine: pd.DataFrame = field(default_factory=lambda: empty_quarantine())
    counts: dict[str, int] = field(default_factory=dict)


# Informational count keys loaders add (not quarantine reasons, not part of the partition).
INFO_KEYS: tuple[str, ...] = ("cancellation", "items", "fraud")


def empty_quarantine(columns: Iterable[str] = ()) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in columns})
    frame[QUARANTINE_REASON_COLUMN] = pd.Series([], dtype="str")
    frame[SOURCE_COLUMN] = pd.Series([], dtype="str")
    frame[ROW_NUMBER_COLUMN] = pd.Series([], dtype="int64")
    return frame


def merge_counts(*counts: Mapping[str, int]) -> dict[str, int]:
    """Sum count dicts key by key (e.g. across files); keys keep first-seen order."""
    merged: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            merged[key] = merged.get(key, 0) + int(value)
    return merged


def reason_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Only the quarantine-reason entries of a counts dict."""
    skip = {TOTAL_KEY, VALID_KEY, *INFO_KEYS}
    return {k: v for k, v in counts.items() if k not in skip}


@dataclass
class QuarantineReport:
    """Accumulates counts and quarantined rows over many files or windows."""

    counts: dict[str, int] = field(default_factory=dict)
    parts: list[pd.DataFrame] = field(default_factory=list)

    def add(self, result: ValidationResult | LoadResult, table: str | None = None) -> None:
        """Add a result's counts (keys become ``<table>.<key>`` when ``table`` is given)."""
        counts = result.counts if table is None else {
            f"{table}.{k}": v for k, v in result.counts.items()}
        self.counts = merge_counts(self.counts, counts)
        if len(result.quarantine):
            self.parts.append(result.quarantine)

    @property
    def quarantine(self) -> pd.DataFrame:
        if not self.parts:
            return empty_quarantine()
        return pd.concat(self.parts, ignore_index=True)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as text (missing stays missing), so a quarantine keeps rows as given."""
    return pd.DataFrame({c: frame[c].astype("str") for c in frame.columns}, index=frame.index)


def quarantine_rows(raw: pd.DataFrame, positions: np.ndarray, reasons: np.ndarray,
                    source: str | pd.Series, row_numbers: np.ndarray | None = None
                    ) -> pd.DataFrame:
    """The raw rows at ``positions`` as text, plus reason, source and row number."""
    rows = as_text(raw.iloc[positions]).reset_index(drop=True)
    rows[QUARANTINE_REASON_COLUMN] = pd.array(reasons, dtype="str")
    rows[SOURCE_COLUMN] = (source.iloc[positions].to_numpy() if isinstance(source, pd.Series)
                           else source)
    rows[SOURCE_COLUMN] = rows[SOURCE_COLUMN].astype("str")
    numbers = positions if row_numbers is None else row_numbers[positions]
    rows[ROW_NUMBER_COLUMN] = np.asarray(numbers, dtype=np.int64)
    return rows


def validate(table: str, frame: pd.DataFrame, source: str = "",
             check_order: bool = True) -> ValidationResult:
    """Split ``frame`` into schema-exact valid rows and quarantined rows (see module doc)."""
    schema = _schema(table, frame, source)
    n = len(frame)
    cols, masks = _parse(table, frame, schema)
    reason = np.full(n, "", dtype=object)
    for name in REASONS[:7]:
        if name in masks:
            reason[(reason == "") & masks[name]] = name
    if check_order and "ts" in cols:
        reason[(reason == "") & _out_of_order(cols["ts"], reason == "")] = "ts_out_of_order"
    if table in _UNIQUE_COLUMN:
        ok = reason == ""
        ids = pd.Series(cols[_UNIQUE_COLUMN[table]].to_numpy()[ok])
        dup_positions = np.flatnonzero(ok)[ids.duplicated(keep="first").to_numpy()]
        reason[dup_positions] = "duplicate_id"
    ok = reason == ""
    valid = _valid_frame(cols, ok, schema)
    bad = np.flatnonzero(~ok)
    quarantine = quarantine_rows(frame, bad, reason[bad], source)
    counts = {TOTAL_KEY: n, VALID_KEY: int(ok.sum())}
    found = pd.Series(reason[bad], dtype=object).value_counts()
    counts.update({r: int(found[r]) for r in REASONS if r in found.index})
    if counts[VALID_KEY] + len(quarantine) != n:
        raise AssertionError(f"validate {table}: {counts} do not add up to {n} rows")
    logger.info("validate %s%s: %s", table, f" ({source})" if source else "", counts)
    return ValidationResult(valid=valid, quarantine=quarantine, counts=counts)


def write_quarantine(result: ValidationResult | LoadResult | pd.DataFrame,
                     directory: str | Path, table: str) -> Path | None:
    """Write quarantined rows to ``<directory>/<table>.quarantine.parquet`` (None if none).

    Written to a temporary name then renamed, so readers never see half a file.
    """
    frame = result if isinstance(result, pd.DataFrame) else result.quarantine
    if frame.empty:
        return None
    path = Path(directory) / f"{table}.quarantine.parquet"
    write_parquet_atomic(frame, path)
    return path


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


def _schema(table: str, frame: pd.DataFrame, source: str) -> pa.Schema:
    features = transaction_feature_columns(list(frame.columns)) if table == "transactions" else []
    schema = schema_for(table, [str(c) for c in features],
                        label_ts=table == "transactions" and LABEL_TS_COLUMN in frame.columns)
    missing = [f.name for f in schema if not f.nullable and f.name not in frame.columns]
    if missing:
        where = f" in {source}" if source else ""
        raise SchemaError(f"{table}: missing required column(s) {missing}{where}")
    if "ts" in frame.columns and (pd.api.types.is_numeric_dtype(frame["ts"])
                                  and not pd.api.types.is_bool_dtype(frame["ts"])):
        raise SchemaError(f"{table}: column 'ts' must hold timestamps or ISO-8601 text, "
                          f"got {frame['ts'].dtype}{f' in {source}' if source else ''}")
    return schema


def _parse(table: str, frame: pd.DataFrame, schema: pa.Schema
           ) -> tuple[dict[str, pd.Series], dict[str, np.ndarray]]:
    """Typed columns (index 0..n-1) and, per reason, a mask of rows that fail it."""
    n = len(frame)
    none = np.zeros(n, dtype=bool)
    masks = {r: none.copy() for r in REASONS[:7]}
    cols: dict[str, pd.Series] = {}
    for fld in schema:
        raw = frame[fld.name].reset_index(drop=True) if fld.name in frame.columns else None
        if raw is None:
            cols[fld.name] = pd.Series([None] * n, dtype=object)
            continue
        if pa.types.is_string(fld.type):
            text, blank = _text(raw)
            cols[fld.name] = text
            if fld.name in _ID_COLUMNS[table]:
                masks["missing_id"] |= blank
            elif fld.name == "title":
                masks["missing_title"] |= blank
            elif fld.name == "event":
                masks["unknown_event"] |= ~text.isin(EVENT_TYPES).to_numpy()
        elif pa.types.is_timestamp(fld.type):
            cols[fld.name], bad = _timestamps(raw)
            # A nullable time (label_ts) may be blank; only text that does not parse is bad.
            masks["bad_type"] |= bad & ~_blank(raw) if fld.nullable else bad
        elif pa.types.is_boolean(fld.type):
            cols[fld.name], bad = _booleans(raw)
            masks["bad_type"] |= bad
        else:
            values, bad = _numbers(raw)
            masks["bad_type"] |= bad
            finite = np.isfinite(values)
            masks["non_finite"] |= np.isinf(values) if fld.nullable else ~finite
            if pa.types.is_integer(fld.type):
                masks["bad_type"] |= finite & ((values != np.floor(values))
                                               | (np.abs(values) >= 2.0**63))
            if fld.name in ("amount", "price"):
                masks["negative_amount"] |= values < 0
            if fld.name == "quantity":
                masks["bad_quantity"] |= values <= 0
            cols[fld.name] = pd.Series(values)
    return cols, masks


def _text(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Stripped text (ids from float columns lose a ``.0``) and a blank mask."""
    if pd.api.types.is_float_dtype(raw):
        whole = raw.notna() & np.isfinite(raw) & (raw == np.floor(raw))
        text = raw.astype("str")
        text[whole] = raw[whole].astype("int64").astype("str")
    else:
        text = raw.astype("str")
        text = unchanged_or(text, text.str.strip())
    blank = (text.isna() | (text == "")).to_numpy()
    return (text.where(~blank) if blank.any() else text), blank


def unchanged_or(text: pd.Series, stripped: pd.Series) -> pd.Series:
    """``text`` itself where stripping changed nothing (the common case: a window written
    by this package), else ``stripped``: a window of millions of rows is then not held
    twice while it is validated."""
    same = (text == stripped) | text.isna()
    return text if bool(same.all()) else stripped


def _numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where missing) and a mask of values that do not parse."""
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(raw), dtype=bool)
    text = raw.astype("str").str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    blank = (text.isna() | (text == "")).to_numpy()
    said_nan = text.str.lower().isin(_NAN_WORDS).to_numpy()
    return values, np.isnan(values) & ~blank & ~said_nan


def _blank(raw: pd.Series) -> np.ndarray:
    text = raw.astype("str").str.strip()
    return (raw.isna() | (text == "") | text.isin(["NaT", "None", "nan"])).to_numpy()


def _timestamps(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        ts = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw):
        ts = raw.dt.tz_localize("UTC")
    else:
        ts = pd.to_datetime(raw.astype("str").str.strip(), utc=True, errors="coerce",
                            format="ISO8601")
    ts = ts.astype("datetime64[us, UTC]")
    return ts, ts.isna().to_numpy()


def _booleans(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Booleans from bool, 0/1 numbers or true/false words; blank is a null label."""
    if pd.api.types.is_bool_dtype(raw) and not raw.isna().any():
        return raw.astype(bool), np.zeros(len(raw), dtype=bool)
    text = raw.astype("str").str.strip().str.lower()
    text = text.str.replace(r"^([01])\.0*$", r"\1", regex=True)
    values = pd.Series(None, index=raw.index, dtype=object)
    values[text.isin(_TRUE_WORDS)] = True
    values[text.isin(_FALSE_WORDS)] = False
    blank = (text.isna() | (text == "")).to_numpy()
    return values, values.isna().to_numpy() & ~blank


def _out_of_order(ts: pd.Series, candidates: np.ndarray) -> np.ndarray:
    """Rows whose ts is earlier than the max ts of earlier candidate rows."""
    ticks = ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
    floor = np.iinfo(np.int64).min
    running = np.maximum.accumulate(np.where(candidates, ticks, floor))
    before = np.concatenate(([floor], running[:-1]))
    result: np.ndarray = candidates & (ticks < before)
    return result


def _valid_frame(cols: dict[str, pd.Series], ok: np.ndarray, schema: pa.Schema) -> pd.DataFrame:
    data: dict[str, pd.Series] = {}
    every_row = bool(ok.all())  # no copy of each column to drop no row
    for fld in schema:
        col = cols[fld.name] if every_row else cols[fld.name][ok].reset_index(drop=True)
        if pa.types.is_integer(fld.type):
            col = col.astype(np.int64)
        data[fld.name] = col
    frame = pd.DataFrame(data, columns=schema.names)
    if frame.dtypes.equals(schema.empty_table().to_pandas().dtypes):
        return frame  # already exact (a window this package wrote): no copy of every column
    # The arrow round trip makes dtypes exactly what a parquet read of the schema gives.
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return table.to_pandas()

