"""Non-neural recommendation baselines: global popularity, and repeat-then-popular.

Both read an interactions frame (``training.data.schema.INTERACTIONS_SCHEMA``: string ids,
UTC ``ts``) and use only its ``event == "purchase"`` rows, counting one per purchase row
(``quantity`` is ignored: buying 12 of a cheap item is one purchase decision). Fitting is
a pandas groupby; recommending returns item ids (strings), exactly ``k`` per user whenever
the items seen in the fitted frame allow it.

Tie-breaking is deterministic: popularity ties go to the smaller ``item_id`` (string order);
a user's own items tie on count by most recent purchase first, then smaller ``item_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import pandas as pd

logger = logging.getLogger(__name__)

PURCHASE_EVENT = "purchase"


class BaselineError(ValueError):
    """Bad input to a baseline; the message names the argument or column."""


class NotFittedError(RuntimeError):
    """``recommend`` was called before ``fit``."""


def _purchases(interactions: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The purchase rows of ``interactions``, only ``columns``; null ids are rejected."""
    missing = [c for c in ("event", *columns) if c not in interactions.columns]
    if missing:
        raise BaselineError(f"interactions: missing column(s) {missing}")
    frame = interactions.loc[interactions["event"] == PURCHASE_EVENT, list(columns)]
    for col in ("user_id", "item_id"):
        if col in frame.columns and frame[col].isna().any():
            raise BaselineError(f"interactions.{col}: null ids in purchase rows")
    return frame


def _check_k(k: int) -> None:
    if k < 1:
        raise BaselineError(f"k: must be >= 1, got {k}")


def _check_exclude(exclude: Sequence[Iterable[str]] | None, user_ids: Sequence[str]) -> None:
    if exclude is not None and len(exclude) != len(user_ids):
        raise BaselineError(
            f"exclude: expected {len(user_ids)} entries (one per user), got {len(exclude)}")


def _fill(head: list[str], pool: Sequence[str], k: int, skip: set[str]) -> list[str]:
    """``head`` then items of ``pool`` not in ``skip`` nor already listed, up to k items."""
    out = list(head[:k])
    seen = skip | set(out)
    for item in pool:
        if len(out) >= k:
            break
        if item not in seen:
            out.append(item)
            seen.add(item)
    return out


class PopularityRecommender:
    """Recommends the most purchased items of the fitted frame to everyone."""

    def __init__(self) -> None:
        self.items_: list[str] | None = None  # most purchased first
        self.counts_: dict[str, int] = {}

    def fit(self, interactions: pd.DataFrame) -> PopularityRecommender:
        """Count purchase rows per item; ties by smaller ``item_id``."""
        return self._fit_purchases(_purchases(interactions, ["item_id"]))

    def _fit_purchases(self, buys: pd.DataFrame) -> PopularityRecommender:
        counts = buys.groupby("item_id", sort=False).size().rename("n").reset_index()
        counts["item_id"] = counts["item_id"].astype(str)
        counts = counts.sort_values(["n", "item_id"], ascending=[False, True], kind="stable")
        self.items_ = counts["item_id"].tolist()
        self.counts_ = dict(zip(self.items_, counts["n"].astype(int).tolist()))
        logger.info("popularity: %d purchases over %d items", len(buys), len(self.items_))
        return self

    def recommend(self, user_ids: Sequence[str], k: int,
                  exclude: Sequence[Iterable[str]] | None = None) -> list[list[str]]:
        """The k most popular items per user; ``exclude[i]`` (aligned with ``user_ids``) lists
        item ids never recommended to ``user_ids[i]`` (e.g. already bought)."""
        if self.items_ is None:
            raise NotFittedError("PopularityRecommender.recommend called before fit")
        _check_k(k)
        _check_exclude(exclude, user_ids)
        if exclude is None:
            return [list(self.items_[:k]) for _ in user_ids]
        return [_fill([], self.items_, k, set(skip)) for skip in exclude]


class RepeatThenPopular:
    """A user's own purchased items (most bought first), then popular items to fill up to k.

    Users unseen at fit time get the popular items only.
    """

    def __init__(self) -> None:
        self.popular = PopularityRecommender()
        self.history_: dict[str, list[str]] | None = None

    def fit(self, interactions: pd.DataFrame) -> RepeatThenPopular:
        """Per user: purchased items by count, ties by most recent purchase then ``item_id``."""
        buys = _purchases(interactions, ["user_id", "item_id", "ts"])
        self.popular._fit_purchases(buys)
        per_item = (
            buys.groupby(["user_id", "item_id"], sort=False)
            .agg(n=("ts", "size"), last=("ts", "max"))
            .reset_index()
        )
        per_item["user_id"] = per_item["user_id"].astype(str)
        per_item["item_id"] = per_item["item_id"].astype(str)
        per_item = per_item.sort_values(
            ["user_id", "n", "last", "item_id"], ascending=[True, False, False, True],
            kind="stable")
        grouped = per_item.groupby("user_id", sort=False)["item_id"].agg(list)
        self.history_ = {str(u): list(items) for u, items in grouped.items()}
        logger.info("repeat-then-popular: %d users with purchases", len(self.history_))
        return self

    def recommend(self, user_ids: Sequence[str], k: int,
                  exclude: Sequence[Iterable[str]] | None = None) -> list[list[str]]:
        """Up to k item ids per user: own history first, then popular items not yet listed;
        ``exclude[i]`` (aligned with ``user_ids``) lists item ids never recommended."""
        if self.history_ is None or self.popular.items_ is None:
            raise NotFittedError("RepeatThenPopular.recommend called before fit")
        _check_k(k)
        _check_exclude(exclude, user_ids)
        pool = self.popular.items_
        skips: list[set[str]] = [set(e) for e in exclude] if exclude is not None \
            else [set() for _ in user_ids]
        return [_fill([i for i in self.history_.get(str(u), []) if i not in skip], pool, k, skip)
                for u, skip in zip(user_ids, skips)]
