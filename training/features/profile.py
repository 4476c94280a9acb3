"""What each user bought so far, in aggregate: the repeat features and item popularity.

Retail baskets are dominated by repeat purchases, so the recommender scores a user's own
past items with features of that (user, item) pair — how often, how recently, what share of
the user's purchases — next to the two-tower similarity, and every item with its recent
popularity. This module is the one home of those features, for training examples,
evaluation and serving alike.

The profile is a snapshot *as of* a time: built from purchases up to ``as_of`` and never
from later ones. Training examples of a new window are scored against the snapshot taken
at the window's start, exactly as evaluation scores the window, so nothing of the window
itself leaks into its own features. Stored with a version as Parquet (never pickled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data.schema import TS_TYPE

PROFILE_FILE = "profile.parquet"
POPULARITY_FILE = "item_popularity.parquet"
# Features of one (user, item) pair, in this order (see :func:`pair_features`).
REPEAT_FEATURES: tuple[str, ...] = ("log_count", "log_days_since", "share", "log_recency_rank",
                                    "log_count_rank", "log_user_items", "log_user_days_since")
# Features of one item (see :meth:`PurchaseProfile.item_popularity`).
POPULARITY_FEATURES: tuple[str, ...] = ("log_count_last_update", "log_count_decayed")
# Each update halves the weight of older purchases in the decayed popularity.
POPULARITY_DECAY = 0.5
SECONDS_PER_DAY = 86_400.0
# Basket-by-earlier-purchase pairs built at once by basket_features: about 100 B each, and
# the merges that make them hold a few copies, so 2M pairs cost ~0.35 GB more at the
# driver's peak than 0.5M did (measured while writing a 260k-purchase window's shards).
MERGE_ROWS = 500_000
# Window rows whose features a group builds at once (about 1.3 kB each at 40 items a row):
# without it a group of users with few pairs each held every row's features of a small
# window (0.36 GB at 260k purchases).
GROUP_ROWS = 65_536


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                         "n": pd.Series(dtype=np.int64),
                         "last": pd.Series(dtype="datetime64[us, UTC]"),
                         "first": pd.Series(dtype="datetime64[us, UTC]")})


def _empty_items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.Series(dtype=str), "last_update": pd.Series(dtype=float),
                         "decayed": pd.Series(dtype=float)})


@dataclass
class RepeatFeatures:
    """Per query row: up to R of the user's past items (``items``, model or pool indices,
    -1/0 = none per the caller's convention) and their features [rows, R, F]."""

    items: np.ndarray
    features: np.ndarray


class RepeatIndex:
    """Every user's repeat features of one profile, computed in one pass and kept ragged
    (each user's rows contiguous), so a query is an array gather rather than a pandas pass:
    what a serving replica holds per version. Same values as
    :meth:`PurchaseProfile.repeat_features` (that method is this index over the asked
    users)."""

    def __init__(self, profile: PurchaseProfile, per_user: int,
                 lookup: Callable[[np.ndarray], np.ndarray]) -> None:
        self.per_user = per_user
        self.spans: dict[str, tuple[int, int]] = {}
        self.items = np.zeros(0, dtype=np.int64)
        self.features = np.zeros((0, len(REPEAT_FEATURES)), dtype=np.float32)
        if not per_user or not len(profile.pairs):
            return
        chosen = pair_features(profile.pairs.astype({"user_id": str}), profile.as_of, per_user)
        users = chosen["user_id"].to_numpy(dtype=object)
        self.items = np.asarray(lookup(chosen["item_id"].to_numpy(dtype=object)), np.int64)
        self.features = chosen[list(REPEAT_FEATURES)].to_numpy(dtype=np.float32)
        # pair_features keeps each user's rows together, in the user's priority order.
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]).tolist()
        for start, stop in zip(starts, starts[1:] + [len(users)]):
            self.spans[str(users[start])] = (start, stop)

    def __len__(self) -> int:
        return len(self.spans)

    def lookup(self, user_ids: list[str] | np.ndarray) -> RepeatFeatures:
        """Aligned with ``user_ids``; users with no purchase get zeros."""
        n = len(user_ids)
        items = np.zeros((n, self.per_user), dtype=np.int64)
        feats = np.zeros((n, self.per_user, len(REPEAT_FEATURES)), dtype=np.float32)
        for row, user in enumerate(user_ids):
            span = self.spans.get(str(user))
            if span is not None:
                start, stop = span
                items[row, :stop - start] = self.items[start:stop]
                feats[row, :stop - start] = self.features[start:stop]
        return RepeatFeatures(items, feats)


class PurchaseProfile:
    """Per (user, item): purchase count, last and first purchase time; per item: popularity."""

    def __init__(self, pairs: pd.DataFrame | None = None, items: pd.DataFrame | None = None,
                 as_of: pd.Timestamp | None = None) -> None:
        self.pairs = _empty_pairs() if pairs is None else pairs.reset_index(drop=True)
        if "first" not in self.pairs.columns:  # pairs from before first purchases were kept
            self.pairs["first"] = pd.Series(pd.NaT, index=self.pairs.index,
                                            dtype="datetime64[us, UTC]")
        self.items = _empty_items() if items is None else items.reset_index(drop=True)
        self.as_of = as_of

    def __len__(self) -> int:
        return len(self.pairs)

    def update(self, buys: pd.DataFrame) -> PurchaseProfile:
        """A new profile with purchases ``buys`` (user_id, item_id, ts) added."""
        if buys.empty:
            return self
        new = buys.groupby(["user_id", "item_id"], sort=False).agg(
            n=("ts", "size"), last=("ts", "max"), first=("ts", "min")).reset_index()
        pairs = pd.concat([self.pairs, new], ignore_index=True) if len(self.pairs) else new
        pairs = pairs.groupby(["user_id", "item_id"], sort=False).agg(
            n=("n", "sum"), last=("last", "max"), first=("first", "min")).reset_index()
        if self.pairs["first"].isna().any():
            # Pairs from a profile saved before first purchases were kept stay unknown
            # (NaT) when bought again: min() would skip NaT and date them from now.
            stale = self.pairs.loc[self.pairs["first"].isna(), ["user_id", "item_id"]]
            unknown = pairs.merge(stale.assign(_stale=1.0), on=["user_id", "item_id"],
                                  how="left")["_stale"].notna().to_numpy()
            pairs.loc[unknown, "first"] = pd.NaT
        counts = buys.groupby("item_id", sort=False).size().rename("last_update").reset_index()
        items = self.items.merge(counts, on="item_id", how="outer", suffixes=("_old", ""))
        items["last_update"] = items["last_update"].fillna(0.0).astype(float)
        old = items["decayed"].fillna(0.0).astype(float)
        items["decayed"] = POPULARITY_DECAY * old + items["last_update"]
        items = items[["item_id", "last_update", "decayed"]]
        as_of = buys["ts"].max() if self.as_of is None else max(self.as_of, buys["ts"].max())
        return PurchaseProfile(pairs, items, as_of)

    def of_users(self, user_ids: set[str]) -> PurchaseProfile:
        """The same snapshot for ``user_ids`` only: their (user, item) pairs, every item's
        popularity and the same ``as_of``, so each of those users' features are unchanged
        (a user's features read only that user's pairs)."""
        keep = self.pairs["user_id"].astype(str).isin(user_ids).to_numpy()
        return PurchaseProfile(self.pairs[keep], self.items, self.as_of)

    def item_counts(self, item_ids: list[str] | np.ndarray) -> np.ndarray:
        """[n, 2] float64: purchases in the last update, decayed count; zeros for items
        never bought."""
        table = self.items.set_index("item_id")
        found = table.reindex(pd.Index(np.asarray(item_ids, dtype=object)))
        values = found[["last_update", "decayed"]].fillna(0.0).to_numpy(dtype=np.float64)
        return values.reshape(len(item_ids), 2)

    def item_popularity(self, item_ids: list[str] | np.ndarray) -> np.ndarray:
        """[n, 2] float32: log1p of :meth:`item_counts`, the model's popularity features."""
        return np.log1p(self.item_counts(item_ids)).astype(np.float32)

    def repeat_features(self, user_ids: list[str] | np.ndarray, per_user: int,
                        lookup: Callable[[np.ndarray], np.ndarray]) -> RepeatFeatures:
        """Each user's own items (at most ``per_user``, the count order and the recency order
        interleaved) as indices given by ``lookup`` (item ids -> int indices, 0 = not there,
        e.g. ``IdMap.lookup``) and their :data:`REPEAT_FEATURES` as of ``as_of``. Users with
        no purchase get zeros."""
        users = {str(u) for u in user_ids}
        wanted = self.pairs[self.pairs["user_id"].astype(str).isin(users)] \
            if per_user and len(self.pairs) and users else self.pairs.iloc[:0]
        subset = PurchaseProfile(wanted, self.items.iloc[:0], self.as_of)
        return subset.repeat_index(per_user, lookup).lookup(user_ids)

    def repeat_index(self, per_user: int, lookup: Callable[[np.ndarray], np.ndarray]
                     ) -> RepeatIndex:
        """Every user's repeat features computed at once (see :class:`RepeatIndex`)."""
        return RepeatIndex(self, per_user, lookup)

    def basket_features(self, rows: pd.DataFrame, per_user: int,
                        lookup: Callable[[np.ndarray], np.ndarray],
                        out: RepeatFeatures | None = None,
                        positions: np.ndarray | None = None) -> RepeatFeatures:
        """Repeat features of purchase ``rows`` (user_id, item_id, ts) made after ``as_of``,
        each as of its own basket: the snapshot plus the same user's purchases in ``rows``
        strictly before the basket's time (never the basket itself or anything later).
        Aligned with ``rows``; what training uses, so every basket after a user's first
        teaches the repeat term, the first window included.

        With ``out`` (zeros), row ``i``'s features go to ``out``'s row ``positions[i]`` and
        ``out`` is returned: the caller's arrays are filled in place, not copied (they are
        most of a window's example bytes)."""
        n = len(rows)
        if out is None:
            out = RepeatFeatures(np.zeros((n, per_user), dtype=np.int64),
                                 np.zeros((n, per_user, len(REPEAT_FEATURES)),
                                          dtype=np.float32))
        where = np.arange(n) if positions is None else np.asarray(positions)
        if len(where) != n:
            raise ValueError(f"positions: {len(where)} for {n} rows")
        for at, part in self.basket_feature_groups(rows, per_user, lookup):
            out.items[where[at]], out.features[where[at]] = part.items, part.features
        return out

    def basket_feature_groups(self, rows: pd.DataFrame, per_user: int,
                              lookup: Callable[[np.ndarray], np.ndarray]
                              ) -> Iterator[tuple[np.ndarray, RepeatFeatures]]:
        """:meth:`basket_features` one group of users at a time: (positions in ``rows``,
        ascending, and their features). Groups follow the users' sorted order, so when
        ``rows`` are sorted by user each group's positions come after the previous
        group's: a caller can write the rows out as the groups come, never holding them
        all."""
        if not len(rows) or not per_user:
            return
        rows = rows[["user_id", "item_id", "ts"]].astype({"user_id": str, "item_id": str})
        pairs = self.pairs.astype({"user_id": str, "item_id": str})
        # Every basket pairs with each earlier purchase of its user: the work (and memory)
        # is the square of a user's purchases. Users are independent, so they go in groups
        # of about MERGE_ROWS basket-purchase pairs and GROUP_ROWS rows: the same result,
        # a bounded peak.
        group = user_groups(rows, pairs, MERGE_ROWS, GROUP_ROWS)
        pair_group = pairs["user_id"].map(group).fillna(-1).astype(np.int64)
        pair_rows = pair_group.groupby(pair_group).indices
        row_group = rows["user_id"].map(group)
        for g, at in sorted(row_group.groupby(row_group).indices.items()):
            group_rows, group_pairs = rows.iloc[at], pairs.iloc[pair_rows.get(g, [])]
            for part in basket_chunks(group_rows, group_pairs, MERGE_ROWS):
                whole = len(part) == len(at)
                yield at[part], basket_group(group_rows, group_pairs, per_user, lookup,
                                             None if whole else part)

    def save(self, directory: Path) -> list[Path]:
        """Write :data:`PROFILE_FILE` and :data:`POPULARITY_FILE`; returns their paths."""
        pairs = pa.Table.from_pandas(self.pairs.astype({"last": "datetime64[us, UTC]",
                                                        "first": "datetime64[us, UTC]"}),
                                     preserve_index=False)
        as_of = "" if self.as_of is None else pd.Timestamp(self.as_of).isoformat()
        pairs = pairs.replace_schema_metadata({**(pairs.schema.metadata or {}),
                                               b"as_of": as_of.encode()})
        pq.write_table(pairs, directory / PROFILE_FILE)
        self.items.to_parquet(directory / POPULARITY_FILE, index=False)
        return [directory / PROFILE_FILE, directory / POPULARITY_FILE]

    @classmethod
    def load(cls, directory: Path) -> PurchaseProfile:
        """The profile saved in ``directory``; an empty one when the files are absent
        (a version written before profiles existed)."""
        path = directory / PROFILE_FILE
        if not path.exists():
            return cls()
        table = pq.read_table(path)
        stamp = (table.schema.metadata or {}).get(b"as_of", b"").decode()
        pairs = table.to_pandas()
        missing = [c for c in ("user_id", "item_id", "n", "last") if c not in pairs.columns]
        if missing:
            raise ValueError(f"profile file {path} lacks column(s) {missing}")
        if "first" not in pairs.columns:  # saved before first purchases were kept: unknown
            pairs["first"] = pd.NaT
        for column in ("last", "first"):
            pairs[column] = pd.to_datetime(pairs[column], utc=True).astype(
                TS_TYPE.to_pandas_dtype())
        pop_path = directory / POPULARITY_FILE
        items = pd.read_parquet(pop_path) if pop_path.exists() else None
        return cls(pairs, items, pd.Timestamp(stamp) if stamp else None)


def user_groups(rows: pd.DataFrame, pairs: pd.DataFrame, budget: int,
                max_rows: int | None = None) -> pd.Series:
    """Each user of ``rows`` -> a group number, ascending in user order; a group's
    basket-by-purchase pairs (window rows and profile pairs, times the user's baskets) add
    up to about ``budget``, and its rows to about ``max_rows`` (no limit: None). Numbers
    may skip."""
    baskets = rows[["user_id", "ts"]].drop_duplicates()["user_id"].value_counts()
    own = rows["user_id"].value_counts()
    bought = own.add(pairs["user_id"].value_counts(), fill_value=0)
    cost = (bought.reindex(baskets.index).fillna(0) * baskets).sort_index()
    group = (cost.cumsum().to_numpy() - 1) // max(1, budget)
    if max_rows is not None:
        # Both running totals rise with the user order, so the larger bucket number does
        # too: each group stays one contiguous run of users within both limits.
        per_user = own.reindex(cost.index).to_numpy()
        group = np.maximum(group, (per_user.cumsum() - 1) // max(1, max_rows))
    return pd.Series(group, index=cost.index, dtype=np.int64)


def basket_chunks(rows: pd.DataFrame, pairs: pd.DataFrame, budget: int) -> list[np.ndarray]:
    """Positions in ``rows`` (one group of users) split into runs of whole baskets, in
    (user, time) order, whose merge in :func:`basket_group` (each basket times its user's
    rows and snapshot pairs) stays within about ``budget`` rows; one run of every row when
    the group's does. A group over the budget is one heavy user (a few thousand purchases
    in hundreds of baskets: the square of that, 2M rows, held 0.5 GB at once); a single
    basket over it still goes alone."""
    cost_of = rows["user_id"].value_counts().add(pairs["user_id"].value_counts(), fill_value=0)
    keys = rows[["user_id", "ts"]]
    baskets = keys.drop_duplicates().sort_values(["user_id", "ts"], kind="stable")
    cost = baskets["user_id"].map(cost_of).to_numpy(dtype=np.int64)
    if cost.sum() <= budget:
        return [np.arange(len(rows))]
    baskets["chunk"] = (np.cumsum(cost) - 1) // max(1, budget)
    row_chunk = keys.merge(baskets, on=["user_id", "ts"], how="left")["chunk"].to_numpy()
    order = np.argsort(row_chunk, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(row_chunk[order])) + 1)


def basket_group(rows: pd.DataFrame, pairs: pd.DataFrame, per_user: int,
                 lookup: Callable[[np.ndarray], np.ndarray],
                 wanted: np.ndarray | None = None) -> RepeatFeatures:
    """:meth:`PurchaseProfile.basket_features` for the users of ``rows`` (``pairs``: their
    snapshot pairs); ids already strings. With ``wanted`` (positions in ``rows``, whole
    baskets), the features of those rows only, every row of ``rows`` still their history."""
    asked = rows if wanted is None else rows.iloc[wanted]
    n = len(asked)
    items = np.zeros((n, per_user), dtype=np.int64)
    feats = np.zeros((n, per_user, len(REPEAT_FEATURES)), dtype=np.float32)
    baskets = asked[["user_id", "ts"]].drop_duplicates().rename(columns={"ts": "ref"})
    baskets["key"] = np.arange(len(baskets))
    earlier = rows.merge(baskets, on="user_id")
    earlier = earlier[earlier["ts"] < earlier["ref"]]
    window = earlier.groupby(["key", "item_id"], sort=False).agg(
        n=("ts", "size"), last=("ts", "max")).reset_index()
    old = pairs.merge(baskets, on="user_id")
    both = pd.concat([old[["key", "item_id", "n", "last"]], window], ignore_index=True)
    both = both.groupby(["key", "item_id"], sort=False).agg(
        n=("n", "sum"), last=("last", "max")).reset_index()
    if both.empty:
        return RepeatFeatures(items, feats)
    # ``key`` is each basket's position: a positional take keeps the timestamps typed (a
    # reindex through to_numpy() made an object array of Timestamps: half the build time).
    both["ref"] = baskets["ref"].array.take(both["key"].to_numpy())
    chosen = pair_features(both.rename(columns={"key": "user_id"}), None, per_user)
    cols = chosen.groupby("user_id", sort=False).cumcount().to_numpy()
    by_key = np.zeros((len(baskets), per_user), dtype=np.int64)
    by_key_f = np.zeros((len(baskets), per_user, len(REPEAT_FEATURES)), dtype=np.float32)
    keys = chosen["user_id"].to_numpy(dtype=np.int64)
    by_key[keys, cols] = lookup(chosen["item_id"].to_numpy(dtype=object))
    by_key_f[keys, cols] = chosen[list(REPEAT_FEATURES)].to_numpy(dtype=np.float32)
    row_key = asked.merge(baskets, left_on=["user_id", "ts"], right_on=["user_id", "ref"],
                          how="left")["key"].to_numpy(dtype=np.int64)
    return RepeatFeatures(by_key[row_key], by_key_f[row_key])


def pair_features(pairs: pd.DataFrame, as_of: pd.Timestamp | None, per_user: int
                  ) -> pd.DataFrame:
    """``pairs`` (user_id, item_id, n, last[, ref]) cut to each user's ``per_user`` items
    (interleaving the count order and the recency order) with the :data:`REPEAT_FEATURES`
    columns, as of ``as_of`` (or of each row's ``ref``)."""
    frame = pairs.copy()
    if "ref" in frame.columns:  # a reference time per row (one snapshot per basket)
        ref = frame.pop("ref")
    else:
        ref = pairs["last"].max() if as_of is None else as_of
    days = (ref - frame["last"]).dt.total_seconds().clip(lower=0.0) / SECONDS_PER_DAY
    frame["log_days_since"] = np.log1p(days.to_numpy(dtype=np.float64))
    frame["log_count"] = np.log1p(frame["n"].to_numpy(dtype=np.float64))
    by_user = frame.groupby("user_id", sort=False)
    frame["share"] = frame["n"] / by_user["n"].transform("sum")
    frame["log_user_items"] = np.log1p(by_user["n"].transform("size").to_numpy(np.float64))
    user_days = by_user["log_days_since"].transform("min")
    frame["log_user_days_since"] = user_days
    recency = by_user["last"].rank(method="first", ascending=False) - 1
    frame["log_recency_rank"] = np.log1p(recency.to_numpy(dtype=np.float64))
    frame = frame.sort_values(["user_id", "n", "last", "item_id"],
                              ascending=[True, False, False, True], kind="stable")
    count_rank = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    frame["log_count_rank"] = np.log1p(count_rank.astype(np.float64))
    # Interleave the two orders: an item is as important as its better rank of the two.
    frame["_priority"] = np.minimum(count_rank, recency.loc[frame.index].to_numpy())
    frame = frame.sort_values(["user_id", "_priority"], kind="stable")
    return frame.groupby("user_id", sort=False).head(per_user).drop(columns="_priority")
