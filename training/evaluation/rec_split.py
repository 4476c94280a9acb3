"""Recommendation metrics split by user kind and by target kind, on one ranked list.

Parts (each a subset of the rows of ``ranked``, scored with the same ranked lists):

* ``all``, ``warm`` (users who bought before the window), ``cold`` (the others);
* with ``repeat`` given, each warm user's targets are split into ``warm_repeat`` (items that
  user bought before the window) and ``warm_new`` (new to that user): the ranked list is
  unchanged, only the target set is restricted, and a user with no target of the kind is
  left out of that part's mean (counted in its ``n_skipped``).

:func:`split_rec_per_user` gives the per-user values (for intervals and paired comparisons),
:func:`split_rec_metrics` their means (``{part}/{metric}@k`` keys, as
``training.evaluation.evaluate``
reports them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.evaluation.metrics import MetricInputError, PerUserRanking, per_user_ranking_metrics

BASE_PARTS = ("all", "warm", "cold")
REPEAT_PARTS = ("warm_repeat", "warm_new")


def _restrict(targets: Sequence[np.ndarray], repeat: Sequence[np.ndarray], rows: np.ndarray,
              want: bool) -> list[np.ndarray]:
    out = []
    for r in rows.tolist():
        flags = np.asarray(repeat[r], dtype=bool)
        items = np.asarray(targets[r])
        if flags.shape != items.shape:
            raise MetricInputError(f"repeat: row {r} has {flags.size} flag(s) for "
                                   f"{items.size} target(s)")
        out.append(items[flags == want])
    return out


def _remap(part: PerUserRanking, rows: np.ndarray) -> PerUserRanking:
    """``part`` scored on ``ranked[rows]``, with its users as indices into all rows."""
    return PerUserRanking(k=part.k, users=rows[part.users], recall=part.recall, ndcg=part.ndcg,
                          hitrate=part.hitrate, n_rows=part.n_rows)


def split_rec_per_user(ranked: np.ndarray, targets: Sequence[np.ndarray], warm: np.ndarray,
                       k: int, repeat: Sequence[np.ndarray] | None = None
                       ) -> dict[str, PerUserRanking]:
    """{part: per-user metrics} for ``all``, ``warm``, ``cold`` and, with ``repeat``,
    ``warm_repeat`` and ``warm_new``; ``users`` index the rows of ``ranked``.

    ``targets[u]`` are user u's target item indices, ``warm[u]`` whether u bought before,
    ``repeat[u]`` a boolean array aligned with ``targets[u]``: True where u bought that item
    before the window (ignored for cold users).
    """
    warm = np.asarray(warm, dtype=bool)
    if warm.shape != (len(targets),) or len(ranked) != len(targets):
        raise MetricInputError(f"warm/targets/ranked: lengths differ ({warm.size}, "
                               f"{len(targets)}, {len(ranked)})")
    if repeat is not None and len(repeat) != len(targets):
        raise MetricInputError(f"repeat: expected {len(targets)} entries, got {len(repeat)}")
    ranked = np.asarray(ranked)
    masks = {"all": np.ones_like(warm), "warm": warm, "cold": ~warm}
    out: dict[str, PerUserRanking] = {}
    for name, mask in masks.items():
        rows = np.flatnonzero(mask)
        part = per_user_ranking_metrics(ranked[rows], [targets[r] for r in rows.tolist()], k=k)
        out[name] = _remap(part, rows)
    if repeat is not None:
        rows = np.flatnonzero(warm)
        for name, want in zip(REPEAT_PARTS, (True, False)):
            part = per_user_ranking_metrics(ranked[rows], _restrict(targets, repeat, rows, want),
                                            k=k)
            out[name] = _remap(part, rows)
    return out


def split_rec_metrics(ranked: np.ndarray, targets: Sequence[np.ndarray], warm: np.ndarray,
                      k: int, repeat: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """``{part}/recall@k``, ``{part}/ndcg@k``, ``{part}/hitrate@k``, ``{part}/n_users`` (and
    ``{part}/n_skipped`` where the part has rows) of every part of
    :func:`split_rec_per_user`; a part without rows has NaN metrics and ``n_users`` 0."""
    metrics: dict[str, float] = {}
    for name, part in split_rec_per_user(ranked, targets, warm, k, repeat).items():
        means = part.means()
        if part.n_rows == 0:
            means.pop("n_skipped")
        metrics.update({f"{name}/{key}": float(v) for key, v in means.items()})
    return metrics
