"""training.evaluation.baselines: popularity and repeat-then-popular on a tiny hand-made frame."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest

from training.data.schema import INTERACTIONS_SCHEMA, empty_frame
from training.evaluation.baselines import (
    BaselineError,
    NotFittedError,
    PopularityRecommender,
    RepeatThenPopular,
)

pytestmark = pytest.mark.unit

T0 = datetime(2011, 1, 1, tzinfo=timezone.utc)

# (user, item, day, event, quantity). Purchase rows per item: b 3, c 3, a 2, d 2; "e" is never
# bought. The quantity of 50 must not count: d stays last.
ROWS = [
    ("u1", "a", 1, "purchase", 1),
    ("u1", "b", 2, "purchase", 1),
    ("u1", "a", 3, "purchase", 1),
    ("u1", "c", 4, "purchase", 1),
    ("u1", "d", 5, "view", 1),
    ("u2", "b", 1, "purchase", 1),
    ("u2", "c", 2, "purchase", 1),
    ("u2", "e", 3, "cart", 1),
    ("u3", "b", 2, "purchase", 1),
    ("u3", "d", 3, "purchase", 50),
    ("u3", "d", 4, "return", 50),
    ("u4", "d", 6, "purchase", 1),
    ("u4", "c", 6, "purchase", 1),
]


@pytest.fixture()
def interactions() -> pd.DataFrame:
    records = [
        {"user_id": u, "item_id": i, "ts": T0 + timedelta(days=d), "event": e,
         "quantity": q, "price": 1.0}
        for u, i, d, e, q in ROWS
    ]
    return pa.Table.from_pylist(records, schema=INTERACTIONS_SCHEMA).to_pandas()


def test_popularity_ranks_by_purchase_rows_ties_by_item_id(interactions) -> None:
    model = PopularityRecommender().fit(interactions)
    assert model.items_ == ["b", "c", "a", "d"]
    assert model.counts_ == {"b": 3, "c": 3, "a": 2, "d": 2}
    assert model.recommend(["u1", "unknown"], 3) == [["b", "c", "a"], ["b", "c", "a"]]


def test_popularity_exclusions_and_short_catalogue(interactions) -> None:
    model = PopularityRecommender().fit(interactions)
    got = model.recommend(["u1", "u2"], 3, exclude=[["b", "zz"], set()])
    assert got == [["c", "a", "d"], ["b", "c", "a"]]
    # only four items were ever bought
    assert model.recommend(["u1"], 10) == [["b", "c", "a", "d"]]
    assert model.recommend(["u1"], 10, exclude=[{"a"}]) == [["b", "c", "d"]]


def test_repeat_then_popular_exact_lists(interactions) -> None:
    model = RepeatThenPopular().fit(interactions)
    # u1: a bought twice; b and c once each, c more recently
    assert model.history_ is not None and model.history_["u1"] == ["a", "c", "b"]
    got = model.recommend(["u1", "u2", "u3", "u4", "new"], 4)
    assert got == [
        ["a", "c", "b", "d"],
        ["c", "b", "a", "d"],
        ["d", "b", "c", "a"],  # d: the return and its quantity are ignored
        ["c", "d", "b", "a"],  # c and d bought at the same time: smaller id first
        ["b", "c", "a", "d"],  # unseen user: popular only
    ]
    assert model.recommend(["u1", "u3"], 2) == [["a", "c"], ["d", "b"]]
    assert model.recommend(["u2"], 10) == [["c", "b", "a", "d"]]


def test_ids_are_strings_even_from_numeric_columns() -> None:
    frame = pd.DataFrame({
        "user_id": [17850, 17850, 13047],
        "item_id": [85123, 71053, 85123],
        "ts": pd.to_datetime([1, 2, 3], unit="D", utc=True),
        "event": ["purchase"] * 3,
    })
    model = RepeatThenPopular().fit(frame)
    assert model.recommend(["17850", "13047"], 2) == [["71053", "85123"], ["85123", "71053"]]


def test_empty_frame_gives_empty_lists() -> None:
    model = RepeatThenPopular().fit(empty_frame("interactions"))
    assert model.recommend(["u1"], 3) == [[]]
    assert PopularityRecommender().fit(empty_frame("interactions")).recommend(["u1"], 3) == [[]]


def test_bad_input_raises() -> None:
    with pytest.raises(NotFittedError):
        PopularityRecommender().recommend(["u1"], 3)
    with pytest.raises(NotFittedError):
        RepeatThenPopular().recommend(["u1"], 3)
    frame = empty_frame("interactions")
    with pytest.raises(BaselineError, match=r"^interactions: missing column\(s\) \['ts'\]"):
        RepeatThenPopular().fit(frame.drop(columns=["ts"]))
    model = PopularityRecommender().fit(frame)
    with pytest.raises(BaselineError, match="^k:"):
        model.recommend(["u1"], 0)
    with pytest.raises(BaselineError, match="^exclude:"):
        model.recommend(["u1", "u2"], 3, exclude=[["a"]])
