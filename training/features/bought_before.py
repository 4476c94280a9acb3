"""Had the paying user bought anything, and the paid-for item, before the payment's window?

The fraud trees' two history inputs (``training.model.fraud_trees.HISTORY_COLUMNS``). A
payment from an account that never bought anything is the classic profile signal of fraud
(the Fraud Detection Handbook's customer features); the table's own columns do not carry it.

"Before" means before the start of the payment's window, because that is what a live
server knows: it holds the history of the last update, never the purchases made since. So
a transaction is read as of its own window in training too. The update scores rows of
earlier windows (the replay reservoir, delayed labels) with a history that has grown
since, and a flag read from today's history would tell the trees that every returning
customer had a history back then: the trees learn "no history = fraud" too sharply, and a
new customer is flagged at serving (measured: realised review FPR 3.25x the target on the
demo shop).

Both read the history's profile, which keeps every (user, item) pair's first and last
purchase time: a purchase before the reference is a first purchase before it. Pairs from a
profile saved before first purchases were kept have no first time; there a last purchase
before the reference still proves one, and otherwise the flag is NaN, which the trees
treat as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.features.profile import PurchaseProfile

NOW = np.iinfo(np.int64).max  # a reference after every stored purchase (serving, the newest rows)


def micros(ts: pd.Series | np.ndarray) -> np.ndarray:
    """UTC timestamps as int64 microseconds."""
    values = ts.to_numpy(dtype="datetime64[us]") if isinstance(ts, pd.Series) \
        else np.asarray(ts, dtype="datetime64[us]")
    return values.astype(np.int64)


@dataclass(frozen=True)
class BoughtBefore:
    """An index over a profile's (user, item) pairs, built once and read for any batch of
    payments (serving builds one per version)."""

    users: pd.Index  # user ids; a user's code is its position (one more: unknown users)
    items: pd.Index  # item ids
    # A pair's purchase is proven before a reference when its first purchase is (or, where
    # the first is unknown, its last): the earliest such time per user and per pair.
    user_proof_us: np.ndarray
    user_undated: np.ndarray  # per user code: a pair without a first purchase time
    pair_key: np.ndarray  # sorted user_code * len(items) + item_code
    pair_proof_us: np.ndarray
    pair_undated: np.ndarray

    @classmethod
    def of(cls, profile: PurchaseProfile) -> BoughtBefore:
        pairs = profile.pairs
        users = pd.Index(pd.unique(pairs["user_id"].to_numpy(dtype=object)))
        items = pd.Index(pd.unique(pairs["item_id"].to_numpy(dtype=object)))
        user = users.get_indexer(pairs["user_id"].to_numpy(dtype=object))
        key = user.astype(np.int64) * max(len(items), 1) + items.get_indexer(
            pairs["item_id"].to_numpy(dtype=object))
        undated = pairs["first"].isna().to_numpy()
        # first <= last wherever both are known, so the earlier of the two is the proof.
        proof = micros(pairs["first"].fillna(pairs["last"]))
        user_proof = np.full(len(users) + 1, NOW, dtype=np.int64)
        np.minimum.at(user_proof, user, proof)
        by_key = np.argsort(key, kind="stable")
        return cls(users, items, user_proof,
                   np.bincount(user[undated], minlength=len(users) + 1) > 0,
                   key[by_key], proof[by_key], undated[by_key])

    def flags(self, user_ids: np.ndarray, item_ids: np.ndarray,
              reference_us: np.ndarray | None = None) -> np.ndarray:
        """[n, 2] float32: 1.0 if the user had bought anything (column 0) and this item
        (column 1) before ``reference_us`` (int64 microseconds per row; None: after every
        stored purchase), 0.0 if not, NaN where an undated pair leaves it open. Unknown
        or empty ids count as no purchase."""
        found = self.users.get_indexer(np.asarray(user_ids, dtype=object))
        user = np.where(found >= 0, found, len(self.users))
        item = self.items.get_indexer(np.asarray(item_ids, dtype=object))
        ref = np.full(len(user), NOW, dtype=np.int64) if reference_us is None \
            else np.asarray(reference_us, dtype=np.int64)
        anything = np.where(self.user_proof_us[user] < ref, 1.0,
                            np.where(self.user_undated[user], np.nan, 0.0))
        return np.stack([anything, self._item(user, item, ref)], axis=1).astype(np.float32)

    def _item(self, user: np.ndarray, item: np.ndarray, ref: np.ndarray) -> np.ndarray:
        out = np.zeros(len(user), dtype=np.float64)
        if not len(self.pair_key):
            return out
        key = user.astype(np.int64) * max(len(self.items), 1) + item
        pos = np.minimum(np.searchsorted(self.pair_key, key), len(self.pair_key) - 1)
        found = (user < len(self.users)) & (item >= 0) & (self.pair_key[pos] == key)
        proven = found & (self.pair_proof_us[pos] < ref)
        out[found & ~proven & self.pair_undated[pos]] = np.nan
        out[proven] = 1.0
        return out
