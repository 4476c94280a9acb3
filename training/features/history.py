"""Per-user purchase history: the last few items each user bought, carried across windows.

The recommendation tower pools a user's recent items, so every stage that builds
examples (training, evaluation, serving) needs the same notion of "recent". The
history is a plain frame (user_id, item_id, ts) holding at most ``max_len`` rows per
user, plus the all-time :class:`training.features.profile.PurchaseProfile` (per user-item counts
and recency, item popularity) that the repeat-aware scores read; both are stored as
Parquet with a checkpoint — never pickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from training.data.schema import TS_TYPE
from training.data.windows import window_start
from training.features.bought_before import BoughtBefore, micros
from training.features.profile import PurchaseProfile

COLUMNS = ["user_id", "item_id", "ts"]


def purchases(interactions: pd.DataFrame) -> pd.DataFrame:
    """The purchase events of an interactions frame, in (user, time) order."""
    bought = np.flatnonzero((interactions["event"] == "purchase").to_numpy())
    return sorted_rows(interactions[COLUMNS], ["user_id", "ts"], bought)


def sorted_rows(frame: pd.DataFrame, keys: list[str], rows: np.ndarray | None = None
                ) -> pd.DataFrame:
    """``frame``'s ``rows`` (all by default), stably sorted by ``keys`` ascending, index
    reset: what ``sort_values(keys, kind="stable")`` gives, ordered in Arrow and taken once
    (at millions of rows pandas held a filtered copy, a sorted copy and the keys' codes)."""
    order = stable_order(frame[keys] if rows is None else frame[keys].take(rows), keys)
    return frame.take(order if rows is None else rows[order]).reset_index(drop=True)


def stable_order(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """The positions that sort ``frame`` by ``keys`` ascending, ties in frame order (Arrow's
    stable sort: no copy of the rows, no per-key codes)."""
    table = pa.Table.from_pandas(frame[keys], preserve_index=False)
    return np.asarray(pc.sort_indices(table, sort_keys=[(key, "ascending") for key in keys]))


class PurchaseHistory:
    """The last ``max_len`` purchases of every user seen so far.

    ``freq`` (:meth:`windowed`): when set, :meth:`bought_before` reads each transaction as
    of the start of its own window, as the update needs for rows of earlier windows.
    """

    def __init__(self, max_len: int, frame: pd.DataFrame | None = None,
                 profile: PurchaseProfile | None = None, freq: str | None = None) -> None:
        if max_len < 1:
            raise ValueError(f"history max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.profile = PurchaseProfile() if profile is None else profile
        self.freq = freq
        empty = pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                              "ts": pd.Series(dtype="datetime64[us, UTC]")})
        self.frame = empty if frame is None else self._trim(frame[COLUMNS])

    def _trim(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(["user_id", "ts"], kind="stable")
        return frame.groupby("user_id", sort=False).tail(self.max_len).reset_index(drop=True)

    def update(self, interactions: pd.DataFrame) -> PurchaseHistory:
        """A new history with the window's purchases appended (self is unchanged)."""
        new = purchases(interactions)
        if new.empty:
            return PurchaseHistory(self.max_len, self.frame, self.profile, self.freq)
        merged = pd.concat([self.frame, new], ignore_index=True) if len(self.frame) else new
        return PurchaseHistory(self.max_len, merged, self.profile.update(new), self.freq)

    def windowed(self, freq: str | None) -> PurchaseHistory:
        """The same purchases, read by :meth:`bought_before` as of each transaction's own
        ``freq`` window (None: after every stored purchase, what serving knows)."""
        out = PurchaseHistory(self.max_len, profile=self.profile, freq=freq)
        out.frame = self.frame
        return out

    def bought_before(self, user_ids: np.ndarray, item_ids: np.ndarray,
                      ts: pd.Series | None = None) -> np.ndarray:
        """[n, 2] float32 (:class:`~training.features.bought_before.BoughtBefore`): had each
        user bought anything, and the item, before the payment's window (``ts`` with
        ``freq`` set), or before now (otherwise)."""
        # Indexed over these users' pairs only: the whole profile (millions of pairs at
        # scale) would be a transient of its own on the driver.
        index = BoughtBefore.of(self.profile.of_users({str(u) for u in user_ids}))
        reference = None if ts is None or self.freq is None \
            else micros(window_start(ts, self.freq))
        return index.flags(user_ids, item_ids, reference)

    def users(self) -> np.ndarray:
        return np.asarray(self.frame["user_id"].unique())

    def last_items(self, user_ids: list[str] | np.ndarray) -> list[list[str]]:
        """Each user's recent items, oldest first (empty for users never seen)."""
        grouped = self.frame.groupby("user_id", sort=False)["item_id"].agg(list)
        return [list(grouped.get(u, [])) for u in user_ids]

    def of_users(self, user_ids: set[str]) -> PurchaseHistory:
        """This history for ``user_ids`` only (see :meth:`PurchaseProfile.of_users`): what
        scoring those users reads, at a fraction of the memory when a snapshot is kept for
        each of many windows."""
        keep = self.frame["user_id"].astype(str).isin(user_ids).to_numpy()
        out = PurchaseHistory(self.max_len, profile=self.profile.of_users(user_ids),
                              freq=self.freq)
        out.frame = self.frame[keep].reset_index(drop=True)
        return out

    def all_items(self) -> dict[str, set[str]]:
        return {u: set(items) for u, items in
                self.frame.groupby("user_id", sort=False)["item_id"]}

    def __len__(self) -> int:
        return len(self.frame)

    def save(self, path: Path) -> list[Path]:
        """Write the recent-items frame to ``path`` and the profile beside it; returns
        every file written."""
        frame = self.frame.copy()
        frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
        frame.to_parquet(path, index=False)
        return [path, *self.profile.save(path.parent)]

    @classmethod
    def load(cls, path: Path, max_len: int) -> PurchaseHistory:
        frame = pd.read_parquet(path)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"history file {path} lacks column(s) {missing}")
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype(TS_TYPE.to_pandas_dtype())
        return cls(max_len, frame, PurchaseProfile.load(path.parent))


def history_matrix(item_lists: list[list[int]], length: int) -> np.ndarray:
    """Right-aligned (most recent last) index matrix, 0-padded on the left."""
    out = np.zeros((len(item_lists), length), dtype=np.int64)
    for row, items in enumerate(item_lists):
        tail = items[-length:]
        if tail:
            out[row, length - len(tail):] = tail
    return out
