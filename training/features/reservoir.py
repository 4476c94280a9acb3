"""Bottom-k reservoirs: which rows a bounded replay table keeps, and what each kept row stands for.

Every row offered gets an independent uniform key, a pure function of (seed, table, window),
and a reservoir keeps the rows with the smallest keys. Keeping the ``k`` smallest keys of
everything ever offered is a uniform sample of it (equivalent to Algorithm R), and needs no
random state beyond the keys, provided ``k`` never grows once a row was dropped.

Labelled transactions are kept **per class**. Frauds are rare (0.17% of the ULB card data), so
a uniform reservoir of 20,000 rows over two days of 6,000 transactions an hour would hold
under a tenth of the frauds ever labelled, while a tree model refitted on every label (the
report's HistGradientBoosting arm) keeps them all. Each class is guaranteed half the
capacity, and either may use what the other leaves free (:func:`class_quotas`), so the rare
class is kept whole until it fills its half. Within a class the sample stays uniform, so a
kept row of class c stands for ``seen_c / held_c`` rows (:func:`class_weights`): fits that
weight by it see the classes in their true proportion.
"""

from __future__ import annotations

import hashlib

import numpy as np


def reservoir_keys(seed: int, table: str, window_id: str, n: int) -> np.ndarray:
    """``n`` uniform keys in [0, 1), a pure function of (seed, table, window_id)."""
    digest = hashlib.sha256(f"{table}\0{window_id}".encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words])).random(n)


def smallest_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest keys, in key order."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(keys) > k:
        part = np.argpartition(keys, k - 1)[:k]
        return part[np.argsort(keys[part], kind="stable")]
    return np.argsort(keys, kind="stable")


def class_quotas(capacity: int, seen_positive: int, seen_negative: int) -> tuple[int, int]:
    """(positives, negatives) a class-split reservoir of ``capacity`` keeps after seeing
    these counts: each class half the capacity, plus whatever the other class leaves free.

    Everything is kept while the total fits. Neither quota grows once its class was thinned
    (a thinned class is larger than its half, and the other class's quota only falls as it
    grows), so each class's bottom-k stays a uniform sample of that class."""
    half = capacity // 2
    positive = min(seen_positive, max(capacity - half, capacity - seen_negative))
    negative = min(seen_negative, capacity - positive)
    return positive, negative


def class_split_keep(keys: np.ndarray, positive: np.ndarray, capacity: int,
                     seen_positive: int, seen_negative: int) -> np.ndarray:
    """Positions of the rows a class-split reservoir keeps, in key order: each class's
    smallest keys up to its :func:`class_quotas` quota. ``keys`` [n] and the class flags
    ``positive`` [n] are of the rows held plus the rows offered; ``seen_*`` count every row
    ever offered (these included)."""
    quota_pos, quota_neg = class_quotas(capacity, seen_positive, seen_negative)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    keep = np.concatenate([pos[smallest_keys(keys[pos], quota_pos)],
                           neg[smallest_keys(keys[neg], quota_neg)]])
    return keep[np.argsort(keys[keep], kind="stable")]


def class_weights(seen: tuple[int, int], held: tuple[int, int]) -> tuple[float, float]:
    """(positive, negative) rows each kept row stands for: seen / held per class (1.0 for a
    class with nothing held)."""
    return (seen[0] / held[0] if held[0] else 1.0, seen[1] / held[1] if held[1] else 1.0)


def proportional_counts(n: int, seen: tuple[int, int], available: tuple[int, int]
                        ) -> tuple[int, int]:
    """(positives, negatives) of a draw of ``n`` rows that keeps the classes in their
    proportion among the rows ever ``seen`` (what a uniform draw over them would hold),
    capped by the rows ``available`` in each class."""
    total = sum(seen)
    positive = min(available[0], int(round(n * seen[0] / total)) if total else 0)
    negative = min(available[1], n - positive)
    return positive, negative
