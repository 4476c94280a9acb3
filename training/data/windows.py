"""python -m training.data.windows --source online_retail|ulb --path P --freq week --out DIR

Cut loaded shop data into time windows and store them as folders; read them back validated.

Window ids sort in time order as plain strings: hour ``2010-12-01T13``, day ``2010-12-01``,
week ``2010-11-29`` (the Monday of the ISO week, UTC), month ``2010-12``.

On-disk layout (users may produce it themselves)::

    <root>/<window_id>/items.parquet          \\  schema of training.data.schema;
    <root>/<window_id>/interactions.parquet    > a missing file means that task has
    <root>/<window_id>/transactions.parquet   /  no data in the window
    <root>/<window_id>/quarantine.parquet     optional: rows quarantined in the window
    <root>/<window_id>/_window.json           {window_id, freq, start, end, counts,
                                               quarantine_counts, source}; required

A window is written into ``<root>/.tmp-<window_id>`` and renamed into place, so a
half-written window is never listed: :func:`list_windows` lists only folders whose name
does not start with ``.`` or ``_`` and that hold ``_window.json``. :func:`read_window`
passes every table through :func:`~training.data.validate.validate`, so bad rows in a
user-produced file are quarantined and counted (never returned), rows out of ``ts``
order included, and a missing column raises ``SchemaError`` naming the file and column.
The command above also writes ``<out>/unplaced.quarantine.parquet``: quarantined rows
whose time did not parse, so that no window can hold them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from training.cli import (
    ConfigError,
    add_dataclass_args,
    dataclass_from_args,
    require,
    setup_logging,
)
from training.data.online_retail import load_online_retail
from training.data.schema import (
    LABEL_TS_COLUMN,
    TABLE_NAMES,
    WindowData,
    empty_frame,
    schema_for,
)
from training.data.source_config import FREQS
from training.data.ulb import DEFAULT_START, load_ulb
from training.data.validate import (
    EVENT_TS_COLUMN,
    QUARANTINE_REASON_COLUMN,
    LoadResult,
    QuarantineReport,
    reason_counts,
    validate,
    write_quarantine,
)
from training.memory import release_arrow_pool

logger = logging.getLogger(__name__)

Freq = Literal["hour", "day", "week", "month"]
SOURCES: tuple[str, ...] = ("online_retail", "ulb")
META_FILE = "_window.json"
QUARANTINE_FILE = "quarantine.parquet"
_FORMATS = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}
_TS_COLUMN = {"items": "first_seen", "interactions": "ts", "transactions": "ts"}


def _check_freq(freq: str) -> None:
    if freq not in FREQS:
        raise ValueError(f"freq: {freq!r} is not one of {FREQS}")


def _utc(ts: pd.Series) -> pd.Series:
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ts.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(ts):
        return ts.dt.tz_localize("UTC")
    return pd.to_datetime(ts, utc=True, format="ISO8601")


def window_start(ts: pd.Series, freq: str) -> pd.Series:
    """The start (UTC) of the window each timestamp falls in, same index."""
    _check_freq(freq)
    return _start(_utc(ts), freq)


def _start(ts: pd.Series, freq: str) -> pd.Series:
    if freq == "hour":
        return ts.dt.floor("h")
    day = ts.dt.floor("D")
    if freq == "day":
        return day
    back = ts.dt.day_of_week if freq == "week" else ts.dt.day - 1
    return day - pd.to_timedelta(back, unit="D")


def window_id_for(ts: pd.Series, freq: Freq) -> pd.Series:
    """The id of the window each timestamp falls in (text, NaN for NaT), same index."""
    _check_freq(freq)
    codes, uniques = pd.factorize(_start(_utc(ts), freq))
    labels = np.asarray(pd.DatetimeIndex(uniques).strftime(_FORMATS[freq]), dtype=object)
    values = labels[codes] if len(labels) else np.full(len(codes), None, dtype=object)
    out = pd.Series(values, index=ts.index, dtype="str")
    out[codes < 0] = np.nan
    return out


def window_bounds(window_id: str, freq: Freq) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of a window, UTC; ValueError if ``window_id`` is not such an id."""
    _check_freq(freq)
    try:
        start = pd.to_datetime(window_id, format=_FORMATS[freq], utc=True)
    except ValueError as exc:
        raise ValueError(f"window_id: {window_id!r} is not a {freq} window id") from exc
    if window_id_for(pd.Series([start]), freq).iloc[0] != window_id:
        raise ValueError(f"window_id: {window_id!r} is not a {freq} window id")
    step = {"hour": pd.DateOffset(hours=1), "day": pd.DateOffset(days=1),
            "week": pd.DateOffset(days=7), "month": pd.DateOffset(months=1)}[freq]
    return start, start + step


def _tables(source: LoadResult | Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    if isinstance(source, LoadResult):
        return {name: getattr(source, name) for name in TABLE_NAMES}
    unknown = sorted(set(source) - set(TABLE_NAMES))
    if unknown:
        raise ValueError(f"tables: unknown table(s) {unknown}; expected {TABLE_NAMES}")
    return {name: source.get(name, empty_frame(name)) for name in TABLE_NAMES}


def split_windows(source: LoadResult | Mapping[str, pd.DataFrame],
                  freq: Freq) -> dict[str, WindowData]:
    """Cut validated tables into windows, sorted by id (see the module doc).

    Interactions and transactions go by ``ts`` (sorted by it within a window, stably);
    a window's items are those its rows reference plus those first seen in it.
    """
    _check_freq(freq)
    tables = _tables(source)
    ids = {name: window_id_for(frame[_TS_COLUMN[name]], freq) for name, frame in tables.items()}
    for name, wid in ids.items():
        if wid.isna().any():
            raise ValueError(f"{name}: {int(wid.isna().sum())} rows have no "
                             f"{_TS_COLUMN[name]}; validate the table first")
    groups = {name: pd.Series(np.arange(len(wid))).groupby(wid.to_numpy()).indices
              for name, wid in ids.items() if name != "items"}
    item_rows = _item_positions(tables, ids)
    windows: dict[str, WindowData] = {}
    for wid in sorted(set().union(*(set(w.dropna()) for w in ids.values()))):
        data = WindowData(window_id=wid)
        for name, positions in groups.items():
            frame = tables[name].iloc[positions.get(wid, np.array([], dtype=np.int64))]
            setattr(data, name, frame.sort_values("ts", kind="stable").reset_index(drop=True))
        rows = item_rows.get(wid, np.array([], dtype=np.int64))
        data.items = tables["items"].iloc[np.sort(rows)].reset_index(drop=True)
        windows[wid] = data
    return windows


def _item_positions(tables: dict[str, pd.DataFrame],
                    ids: dict[str, pd.Series]) -> dict[str, np.ndarray]:
    """Per window, positions in the items table of the items that belong to it."""
    pairs = [pd.DataFrame({"window": ids[name].to_numpy(),
                           "item_id": tables[name]["item_id"].to_numpy()})
             for name in TABLE_NAMES]
    wanted = pd.concat(pairs, ignore_index=True).dropna().drop_duplicates()
    catalog = pd.DataFrame({"item_id": tables["items"]["item_id"].to_numpy(),
                            "position": np.arange(len(tables["items"]))})
    joined = wanted.merge(catalog, on="item_id", how="inner")
    return {str(k): v["position"].to_numpy() for k, v in joined.groupby("window")}


def split_quarantine(quarantine: pd.DataFrame, freq: Freq) -> dict[str, pd.DataFrame]:
    """Quarantined rows per window by their ``event_ts``; key ``""`` holds the rest."""
    if EVENT_TS_COLUMN not in quarantine.columns:
        return {"": quarantine} if len(quarantine) else {}
    wid = window_id_for(quarantine[EVENT_TS_COLUMN], freq).fillna("")
    return {str(k): v.reset_index(drop=True) for k, v in quarantine.groupby(wid.to_numpy())}


def write_window(root: str | Path, data: WindowData, freq: Freq, *, source: str = "",
                 quarantine: pd.DataFrame | None = None) -> Path:
    """Write one window atomically (into ``.tmp-<id>``, then renamed); returns its folder."""
    start, end = window_bounds(data.window_id, freq)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / data.window_id, root / f".tmp-{data.window_id}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in TABLE_NAMES:
        frame = data.table(name)
        if len(frame):
            features = data.fraud_features if name == "transactions" else None
            schema = schema_for(name, features, label_ts=LABEL_TS_COLUMN in frame.columns)
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            pq.write_table(table, tmp / f"{name}.parquet")
    quarantined: dict[str, int] = {}
    if quarantine is not None and len(quarantine):
        pq.write_table(pa.Table.from_pandas(quarantine, preserve_index=False),
                       tmp / QUARANTINE_FILE)
        found = quarantine[QUARANTINE_REASON_COLUMN].value_counts()
        quarantined = {str(k): int(v) for k, v in found.items()}
    meta = {"window_id": data.window_id, "freq": freq, "start": start.isoformat(),
            "end": end.isoformat(), "counts": data.counts(), "quarantine_counts": quarantined,
            "source": source}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if final.exists():
        # POSIX cannot rename a folder over a non-empty one: move the old one aside first.
        old = root / f".old-{data.window_id}"
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def rewrite_window(root: str | Path, data: WindowData) -> Path:
    """Replace a stored window's tables with ``data``'s (e.g. label arrival times added),
    atomically, keeping its freq, source and quarantined rows."""
    meta = read_window_meta(root, data.window_id)
    quarantine = Path(root) / data.window_id / QUARANTINE_FILE
    return write_window(root, data, meta["freq"], source=str(meta.get("source", "")),
                        quarantine=pd.read_parquet(quarantine) if quarantine.is_file()
                        else None)


def list_windows(root: str | Path) -> list[str]:
    """Ids of the complete windows under ``root``, sorted (time order)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_"))
                  and (p / META_FILE).is_file())


def read_window_meta(root: str | Path, window_id: str) -> dict[str, Any]:
    path = Path(root) / window_id / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"window {window_id!r}: no {path}")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def transaction_columns(root: str | Path, window_id: str) -> list[str]:
    """The columns of a stored window's transactions (its file's schema; none if it has no
    transactions), without reading its rows."""
    path = Path(root) / window_id / "transactions.parquet"
    return list(pq.read_schema(path).names) if path.is_file() else []


def read_window(root: str | Path, window_id: str,
                report: QuarantineReport | None = None) -> WindowData:
    """Read and validate one window; bad rows go to ``report`` (and the log), never back."""
    folder = Path(root) / window_id
    if not folder.is_dir():
        raise FileNotFoundError(f"window {window_id!r}: no folder {folder}")
    data = WindowData(window_id=window_id)
    for name in TABLE_NAMES:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            continue
        raw = pd.read_parquet(path)
        # Arrow's pool keeps the decode buffers of the read (at 5M rows, ~0.6 GB on top of a
        # ~0.35 GB table) and validation's own until told: returned after each.
        release_arrow_pool()
        result = validate(name, raw, source=str(path))
        del raw
        release_arrow_pool()
        if len(result.quarantine):
            logger.warning("%s: quarantined %s", path, reason_counts(result.counts))
        if report is not None:
            report.add(result, table=name)
        setattr(data, name, result.valid)
    return data


def write_windows(result: LoadResult, root: str | Path, freq: Freq,
                  source: str = "") -> dict[str, Path]:
    """Split a load into windows and write them (with their quarantined rows)."""
    windows = split_windows(result, freq)
    quarantine = split_quarantine(result.quarantine, freq)
    unplaced = quarantine.pop("", None)
    if unplaced is not None:
        write_quarantine(unplaced, root, "unplaced")
    for wid in quarantine:
        windows.setdefault(wid, WindowData(window_id=wid))
    written = {}
    for wid in tqdm(sorted(windows), desc="windows", unit="window", disable=None):
        written[wid] = write_window(root, windows[wid], freq, source=source,
                                    quarantine=quarantine.get(wid))
    return written


@dataclass(frozen=True)
class WindowsConfig:
    """Settings of ``python -m training.data.windows``."""

    source: Literal["online_retail", "ulb"] = field(
        default="online_retail", metadata={"help": "which published data set --path holds"})
    path: str = field(default="", metadata={
        "help": "the CSV file, or (online_retail) a folder of daily CSVs"})
    freq: Literal["hour", "day", "week", "month"] = field(
        default="week", metadata={"help": "window length"})
    out: str = field(default="", metadata={"help": "folder the windows are written under"})
    start: str = field(default=DEFAULT_START, metadata={
        "help": "ulb only: the UTC time that Time=0 stands for"})

    def __post_init__(self) -> None:
        require(self.source in SOURCES, "source", f"must be one of {SOURCES}")
        require(self.freq in FREQS, "freq", f"must be one of {FREQS}")
        require(bool(self.path), "path", "is required")
        require(bool(self.out), "out", "is required")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.windows",
                                     description="Cut Online Retail or ULB data into windows.")
    add_dataclass_args(parser, WindowsConfig)
    try:
        config = dataclass_from_args(WindowsConfig, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging()
    if config.source == "online_retail":
        result = load_online_retail(config.path)
    else:
        result = load_ulb(config.path, start=config.start)
    written = write_windows(result, config.out, config.freq, source=config.path)
    for wid, folder in written.items():
        meta = read_window_meta(folder.parent, wid)
        counts = " ".join(f"{k}={v}" for k, v in meta["counts"].items())
        print(f"{wid}  {counts}  quarantined={meta['quarantine_counts']}")
    print(f"total  {result.counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
