"""An update also trains on the previous version's held-out tail (its gate slice)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from training.data.split import split_holdout
from training.data.synthetic import SyntheticShopConfig, generate
from training.update.prepare import carried_tail, with_rows

pytestmark = pytest.mark.unit

WINDOWS = list(generate(SyntheticShopConfig(n_windows=3, interactions_per_window=300,
                                            transactions_per_window=100, n_users=60,
                                            n_items=40)).windows)


def parent_of(window_id: str | None) -> Any:
    return SimpleNamespace(window=window_id)


def test_the_parents_tail_is_carried_into_the_next_update() -> None:
    tail = carried_tail(WINDOWS, parent_of(WINDOWS[0].window_id), WINDOWS[1], 0.2)
    expected = split_holdout(WINDOWS[0], 0.2)[1]
    assert tail is not None
    assert tail.interactions.equals(expected.interactions)
    assert tail.transactions.equals(expected.transactions)
    assert 0 < len(tail.interactions) < len(WINDOWS[0].interactions)
    # Every carried row is from the last 20% (by time) of the parent's window.
    cut = split_holdout(WINDOWS[0], 0.2)[0].interactions["ts"].max()
    assert (tail.interactions["ts"] > cut).all()

    head = split_holdout(WINDOWS[1], 0.2)[0]
    merged = with_rows(head, tail)
    assert merged.window_id == WINDOWS[1].window_id
    assert len(merged.interactions) == len(head.interactions) + len(tail.interactions)
    assert len(merged.transactions) == len(head.transactions) + len(tail.transactions)
    assert merged.items["item_id"].is_unique
    assert set(tail.items["item_id"]) <= set(merged.items["item_id"])
    assert with_rows(head, None) is head


@pytest.mark.parametrize("parent", [None, parent_of(None), parent_of("1999-01-04")])
def test_nothing_is_carried_without_a_known_parent_window(parent: Any) -> None:
    assert carried_tail(WINDOWS, parent, WINDOWS[1], 0.2) is None


def test_retraining_the_parents_own_window_carries_nothing() -> None:
    parent = parent_of(WINDOWS[1].window_id)
    assert carried_tail(WINDOWS, parent, WINDOWS[1], 0.2) is None
