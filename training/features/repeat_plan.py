"""Repeat features still to build: what a window's rec rows need, built when a fit needs them.

Training's repeat arrays (``repeat_items`` items x :data:`REPEAT_FEATURES` a purchase) are
about 93% of a window's example bytes. An in-process fit builds them whole
(:meth:`RepeatPlan.fill`); the Ray path builds them a group of users at a time while it writes
each rank's file (:func:`repeat_blocks`), so the driver never holds them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from training.features.profile import REPEAT_FEATURES, PurchaseProfile, RepeatFeatures

# The dtype of every item/user index array a fit's examples hold (rows, repeat items,
# histories): int32, half the bytes of the int64 that lookups return, on the driver, in
# the rank files and in each worker; batches widen them to int64 (``index_tensor``).
# ``as_index`` refuses a vocabulary past its range.
INDEX_DTYPE = np.int32


def as_index(indices: np.ndarray) -> np.ndarray:
    """``indices`` as :data:`INDEX_DTYPE` (ValueError past its range)."""
    indices = np.asarray(indices)
    limit = np.iinfo(INDEX_DTYPE).max
    if indices.size and int(indices.max()) > limit:
        raise ValueError(f"vocabulary: index {int(indices.max())} exceeds {limit}, the largest "
                         "an example index array holds")
    return indices.astype(INDEX_DTYPE, copy=False)


def empty_repeat(n: int, width: int) -> RepeatFeatures:
    """Zero repeat arrays for ``n`` rows, ``width`` items each."""
    return RepeatFeatures(np.zeros((n, width), dtype=INDEX_DTYPE),
                          np.zeros((n, width, len(REPEAT_FEATURES)), dtype=np.float32))


@dataclass(frozen=True)
class RepeatPlan:
    """Purchase ``rows`` bought after the profile's snapshot, whose features go to example
    rows ``positions`` (ascending); every other example row (replayed, carried: older than
    the snapshot, which may hold the row itself) keeps zeros."""

    profile: PurchaseProfile
    rows: pd.DataFrame
    positions: np.ndarray
    per_user: int
    lookup: Callable[[np.ndarray], np.ndarray]

    def shifted(self, offset: int) -> RepeatPlan:
        """The plan for the same rows placed ``offset`` rows later."""
        return replace(self, positions=self.positions + offset)

    def fill(self, out: RepeatFeatures) -> None:
        """Every row's features into ``out`` (zeros, one row per example row)."""
        self.profile.basket_features(self.rows, self.per_user, self.lookup, out,
                                     self.positions)

    def parts(self) -> Iterator[tuple[np.ndarray, RepeatFeatures]]:
        """(example row positions, their features) a group of users at a time."""
        for at, part in self.profile.basket_feature_groups(self.rows, self.per_user,
                                                           self.lookup):
            yield self.positions[at], part


def repeat_blocks(n: int, plans: Sequence[RepeatPlan], block_rows: int
                  ) -> Iterator[tuple[int, int, RepeatFeatures]]:
    """(start, stop, the repeat arrays of rows start..stop-1) over ``n`` example rows in
    order, at most ``block_rows`` rows each, holding one group of users' features at a
    time; RuntimeError when a group's rows are not after the previous group's (the rows
    must be sorted by user, as the example builders sort them)."""
    width = plans[0].per_user if plans else 0
    start = 0
    # A last group at row n emits the rows after the last fresh one (zeros).
    end = (np.asarray([n], dtype=np.int64), empty_repeat(0, width))
    for where, part in itertools.chain(*(plan.parts() for plan in plans), [end]):
        if len(where) and (where[0] < start or np.any(np.diff(where) <= 0)):
            raise RuntimeError("repeat feature groups out of row order: the rows must be "
                               "sorted by user_id")
        stop = min(n, int(where[-1]) + 1) if len(where) else start
        for at in range(start, stop, block_rows):
            upto = min(stop, at + block_rows)
            out = empty_repeat(upto - at, width)
            lo, hi = np.searchsorted(where, [at, upto])
            out.items[where[lo:hi] - at] = part.items[lo:hi]
            out.features[where[lo:hi] - at] = part.features[lo:hi]
            yield at, upto, out
        start = max(start, stop)
