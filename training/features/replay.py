"""Replay buffer: a uniform sample of earlier windows' training rows, mixed into new windows.

Fine-tuning only on the newest window lets the model forget older behaviour; mixing in a
little of the past counters that. Per table (purchase interactions, labelled transactions)
the buffer keeps a reservoir sample, uniform over every row ever offered: each row gets an
independent uniform key and the ``capacity`` rows with the smallest keys are kept (bottom-k
sampling, equivalent to Algorithm R). Keys come from a generator seeded by (seed, table,
window_id), so the buffer is deterministic and needs no random state beyond the keys it
stores. The titles of buffered items are kept too, so a replayed item a fresh model has never
seen still has a title. Saved as Parquet + JSON meta, never pickled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from training.data.schema import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    WindowData,
    empty_frame,
    transaction_feature_columns,
    transactions_schema,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TABLES: tuple[str, ...] = ("interactions", "transactions")
FILES: dict[str, str] = {"interactions": "replay_interactions.parquet",
                         "transactions": "replay_transactions.parquet",
                         "items": "replay_items.parquet"}
KEY_COLUMN = "_replay_key"
# What identifies a row when one sample must avoid another's rows.
ROW_KEYS: dict[str, list[str]] = {"interactions": ["user_id", "item_id", "ts"],
                                  "transactions": ["txn_id"]}
META_KEYS: tuple[str, ...] = ("format_version", "capacity", "seed", "seen", "feature_columns",
                              "windows")


class ReplayError(ValueError):
    """A window, setting or saved buffer does not fit the replay buffer; names the culprit."""


def _whole(value: object, setting: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (numpy ints too), else a ReplayError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ReplayError(f"{setting}: must be an int >= {minimum}, got {value!r}")
    return int(value)


def _keys(seed: int, table: str, window_id: str, n: int) -> np.ndarray:
    """``n`` uniform keys in [0, 1), a pure function of (seed, table, window_id)."""
    digest = hashlib.sha256(f"{table}\0{window_id}".encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words])).random(n)


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest keys, in key order."""
    if len(keys) > k:
        part = np.argpartition(keys, k - 1)[:k]
        return part[np.argsort(keys[part], kind="stable")]
    return np.argsort(keys, kind="stable")


def _conform(frame: pd.DataFrame, schema: pa.Schema, what: str) -> pd.DataFrame:
    """``frame``'s schema columns with the schema's types (what Parquet round trips keep)."""
    try:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    except (KeyError, pa.ArrowException, ValueError, TypeError) as err:
        raise ReplayError(f"{what}: does not fit the table schema: {err}") from err
    return table.to_pandas()


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Row concatenation that skips empty frames (their dtypes must not win)."""
    rows = [f for f in frames if len(f)]
    if not rows:
        return frames[0]
    return rows[0] if len(rows) == 1 else pd.concat(rows, ignore_index=True)


def _item_ids(*frames: pd.DataFrame) -> set[str]:
    ids: set[str] = set()
    for frame in frames:
        ids.update(str(i) for i in frame["item_id"].dropna().unique())
    return ids


def _without(frame: pd.DataFrame, exclude: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` whose ``keys`` match no row of ``exclude``."""
    if not len(frame) or not len(exclude) or any(k not in exclude.columns for k in keys):
        return frame
    index = pd.MultiIndex.from_frame(exclude[keys].astype(frame[keys].dtypes.to_dict()))
    found = pd.MultiIndex.from_frame(frame[keys]).isin(index)
    return frame[~found]


def labelled_count(window: WindowData) -> dict[str, int]:
    """The window's rows the buffer would take: purchases and labelled transactions."""
    txns = window.transactions
    labelled = int(txns["is_fraud"].notna().sum()) if len(txns) else 0
    purchases = int((window.interactions["event"] == "purchase").sum())
    return {"interactions": purchases, "transactions": labelled}


class ReplayBuffer:
    """Reservoir samples (``capacity`` rows per table) of purchases and labelled transactions.

    ``add_window`` offers a window; ``sample``/``mix`` draw from what is held; ``save`` and
    :meth:`load` persist it next to a checkpoint.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = _whole(capacity, "capacity", 1)
        self.seed = _whole(seed, "seed", 0)
        self.feature_columns: list[str] | None = None
        self.windows: list[str] = []
        self._seen = dict.fromkeys(TABLES, 0)
        self._frames: dict[str, pd.DataFrame] = {t: self._empty(t) for t in TABLES}
        self._items = empty_frame("items")

    def _schema(self, table: str) -> pa.Schema:
        if table == "interactions":
            return INTERACTIONS_SCHEMA
        return transactions_schema(list(self.feature_columns or []))

    def _empty(self, table: str) -> pd.DataFrame:
        frame = self._schema(table).empty_table().to_pandas()
        return frame.assign(**{KEY_COLUMN: np.zeros(0, dtype=np.float64)})

    # ---- offering windows ------------------------------------------------------------------

    def _check_features(self, window: WindowData) -> None:
        """A window with transactions must carry exactly the buffer's feature columns."""
        if self.feature_columns is None or len(window.transactions) == 0:
            return
        theirs = transaction_feature_columns(list(window.transactions.columns))
        missing = sorted(set(self.feature_columns) - set(theirs))
        extra = sorted(set(theirs) - set(self.feature_columns))
        if missing or extra:
            raise ReplayError(f"transactions: window {window.window_id!r} feature columns differ "
                              f"from the replay buffer's {self.feature_columns}: missing "
                              f"{missing}, unexpected {extra}")

    def _offered(self, window: WindowData) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
        """The window's purchases and labelled transactions in the buffer's schema, and the
        feature columns; checked before anything changes, so a bad window changes nothing."""
        self._check_features(window)
        txns = window.transactions
        labelled = txns[txns["is_fraud"].notna()] if len(txns) else txns
        features = self.feature_columns
        if features is None and len(labelled):
            features = transaction_feature_columns(list(txns.columns))
        frames = {"interactions": window.interactions[window.interactions["event"] == "purchase"],
                  "transactions": labelled}
        schemas = {"interactions": INTERACTIONS_SCHEMA,
                   "transactions": transactions_schema(list(features or []))}
        return {t: _conform(f, schemas[t], f"{t} of {window.window_id!r}") if len(f) else f
                for t, f in frames.items()}, features

    def add_window(self, window: WindowData) -> None:
        """Offer the window's purchases and labelled transactions to the reservoirs."""
        if window.window_id in self.windows:
            raise ReplayError(f"window_id: {window.window_id!r} was already added (rows would "
                              "be offered twice)")
        offered, features = self._offered(window)
        new_items = _conform(window.items, ITEMS_SCHEMA, "items") if len(window.items) else None
        if self.feature_columns is None and features is not None:
            self.feature_columns = features
            self._frames["transactions"] = self._empty("transactions")
        for table, rows in offered.items():
            self._seen[table] += len(rows)
            if len(rows):
                keys = _keys(self.seed, table, window.window_id, len(rows))
                both = _concat([self._frames[table], rows.assign(**{KEY_COLUMN: keys})])
                keep = _smallest(both[KEY_COLUMN].to_numpy(), self.capacity)
                self._frames[table] = both.iloc[keep].reset_index(drop=True)
        self._refresh_items(new_items)
        self.windows.append(window.window_id)
        logger.info("replay: offered window %s (%s); holding %s", window.window_id,
                    {t: len(f) for t, f in offered.items()}, self.counts())

    def _refresh_items(self, new_items: pd.DataFrame | None) -> None:
        """Titles of the buffered rows' items; a window's newer title wins."""
        frames = [self._items] if new_items is None else [self._items, new_items]
        items = _concat(frames).drop_duplicates("item_id", keep="last")
        held = _item_ids(*self._frames.values())
        items = items[items["item_id"].isin(held)]
        self._items = items.sort_values("item_id", kind="stable").reset_index(drop=True)

    # ---- drawing ---------------------------------------------------------------------------

    def sample(self, n_interactions: int, n_transactions: int, seed: int,
               exclude: WindowData | None = None) -> WindowData:
        """Uniform draws without replacement (capped at what is held), as window "replay",
        with the items (titles) the drawn rows reference; rows keep their timestamps.

        Rows that also appear in ``exclude`` (same user, item and ts / same txn_id) are not
        drawn: e.g. a gate sample disjoint from the rows :meth:`mix` put into training.
        """
        rng = np.random.default_rng(seed)
        drawn: dict[str, pd.DataFrame] = {}
        for table, n in (("interactions", n_interactions), ("transactions", n_transactions)):
            wanted = _whole(n, f"n_{table}", 0)
            frame = self._frames[table]
            if exclude is not None:
                frame = _without(frame, exclude.table(table), ROW_KEYS[table])
            rows = np.sort(rng.choice(len(frame), size=min(wanted, len(frame)), replace=False))
            drawn[table] = frame.iloc[rows].drop(columns=KEY_COLUMN).reset_index(drop=True)
        items = self._items[self._items["item_id"].isin(_item_ids(*drawn.values()))]
        return WindowData("replay", items.reset_index(drop=True), drawn["interactions"],
                          drawn["transactions"])

    def mix(self, window: WindowData, ratio: float, seed: int) -> WindowData:
        """``window`` plus a replay sample of round(ratio × the window's purchases /
        labelled transactions) rows per table; ratio 0 returns ``window`` itself."""
        if not math.isfinite(ratio) or ratio < 0:
            raise ReplayError(f"ratio: must be a finite number >= 0, got {ratio!r}")
        if ratio == 0:
            return window
        self._check_features(window)
        wanted = {t: int(round(ratio * n)) for t, n in labelled_count(window).items()}
        replay = self.sample(wanted["interactions"], wanted["transactions"], seed)
        old_items = replay.items[~replay.items["item_id"].isin(window.items["item_id"])]
        mixed = WindowData(
            window.window_id,
            items=_concat([window.items, old_items]),
            interactions=_concat([window.interactions, replay.interactions]),
            transactions=_concat([window.transactions, replay.transactions]))
        logger.info("replay: window %s + %s replayed rows", window.window_id, replay.counts())
        return mixed

    # ---- bookkeeping -----------------------------------------------------------------------

    @property
    def seen(self) -> dict[str, int]:
        """Rows ever offered, per table."""
        return dict(self._seen)

    def counts(self) -> dict[str, int]:
        """Rows held per table (and buffered items with a title)."""
        return {"interactions": len(self._frames["interactions"]),
                "transactions": len(self._frames["transactions"]), "items": len(self._items)}

    def __len__(self) -> int:
        return len(self._frames["interactions"]) + len(self._frames["transactions"])

    def frame(self, table: str) -> pd.DataFrame:
        """A copy of a held table ("interactions", "transactions" or "items"); the two row
        tables carry their reservoir key in ``_replay_key``."""
        if table == "items":
            return self._items.copy()
        if table not in TABLES:
            raise ReplayError(f"table: unknown {table!r}; expected one of {(*TABLES, 'items')}")
        return self._frames[table].copy()

    # ---- persistence -----------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "capacity": self.capacity, "seed": self.seed,
                "seen": self.seen, "feature_columns": self.feature_columns,
                "windows": list(self.windows), "counts": self.counts()}

    def save(self, directory: Path) -> tuple[list[Path], dict[str, Any]]:
        """Write the three Parquet files into ``directory``; returns (paths, JSON-able meta)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        frames = {**self._frames, "items": self._items}
        paths = []
        for table, name in FILES.items():
            path, tmp = folder / name, folder / (name + ".tmp")
            frames[table].to_parquet(tmp, index=False)
            os.replace(tmp, path)
            paths.append(path)
        return paths, self.meta()

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> ReplayBuffer:
        """Rebuild a buffer from :meth:`save`'s files and meta; raises :class:`ReplayError`
        naming the bad file or meta key."""
        _check_meta(meta)
        buffer = cls(int(meta["capacity"]), int(meta["seed"]))
        features = meta["feature_columns"]
        buffer.feature_columns = None if features is None else [str(c) for c in features]
        buffer.windows = [str(w) for w in meta["windows"]]
        for table in TABLES:
            path = Path(directory) / FILES[table]
            frame = _read(path)
            if table == "transactions" and buffer.feature_columns is not None:
                found = transaction_feature_columns([c for c in frame.columns if c != KEY_COLUMN])
                if found != buffer.feature_columns:
                    raise ReplayError(f"{path}: feature columns {found} differ from the meta's "
                                      f"{buffer.feature_columns}")
            if KEY_COLUMN not in frame.columns:
                raise ReplayError(f"{path}: column {KEY_COLUMN!r} is missing")
            if len(frame) > buffer.capacity or len(frame) > int(meta["seen"][table]):
                raise ReplayError(f"{path}: {len(frame)} rows exceed capacity "
                                  f"{buffer.capacity} or seen {meta['seen'][table]}")
            rows = _conform(frame, buffer._schema(table), str(path))
            buffer._frames[table] = rows.assign(**{KEY_COLUMN: frame[KEY_COLUMN].to_numpy(
                dtype=np.float64)})
            buffer._seen[table] = int(meta["seen"][table])
        items_path = Path(directory) / FILES["items"]
        buffer._items = _conform(_read(items_path), ITEMS_SCHEMA, str(items_path))
        return buffer


def _check_meta(meta: dict[str, Any]) -> None:
    if not isinstance(meta, dict):
        raise ReplayError(f"meta: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ReplayError(f"meta: lacks {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ReplayError(f"meta: format_version {meta['format_version']!r} is not supported "
                          f"(this code reads {FORMAT_VERSION})")
    seen = meta["seen"]
    if not isinstance(seen, dict) or any(not isinstance(seen.get(t), int) for t in TABLES):
        raise ReplayError(f"meta: seen must map {list(TABLES)} to ints, got {seen!r}")


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReplayError(f"{path}: file is missing")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ReplayError(f"{path}: cannot read Parquet: {err}") from err
