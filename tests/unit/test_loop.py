"""Examples, batching, schedules and the single-process loop on a tiny random encoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from training.cli import ConfigError
from training.config import TrainConfig
from training.data.schema import WindowData, empty_frame
from training.evaluation.evaluate import evaluate_fraud, evaluate_rec, rec_queries
from training.features.examples import WindowExamples, iter_batches, rec_examples, steps_per_epoch
from training.features.history import PurchaseHistory, history_matrix
from training.fit.loop import init_model, lr_factor, train_window
from training.model import ModelConfig

pytestmark = pytest.mark.unit

TINY = ModelConfig(encoder_init="tiny_random", finetune_layers=1, dim=16, history_len=3,
                   fraud_hidden=16, max_title_tokens=8)


def _ts(minutes: list[int]) -> pd.Series:
    base = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.Series([base + pd.Timedelta(minutes=m) for m in minutes]).astype(
        "datetime64[us, UTC]")


def _interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, minutes = zip(*rows)
    return pd.DataFrame({"user_id": list(users), "item_id": list(items), "ts": _ts(list(minutes)),
                         "event": "purchase", "quantity": 1, "price": 1.0})


def _items(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": ids, "title": [f"red widget {i}" for i in ids],
                         "category": "x", "price": 1.0,
                         "first_seen": _ts([0] * len(ids))})


def _transactions(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.2
    return pd.DataFrame({
        "txn_id": [f"t{i}" for i in range(n)], "user_id": ["u1"] * n, "item_id": [None] * n,
        "ts": _ts(list(range(n))), "amount": np.where(fraud, 500.0, 20.0) * rng.random(n) + 1,
        "is_fraud": fraud, "f_night": fraud.astype(float) + rng.normal(0, 0.1, n)})


def _window(wid: str, rows: list[tuple[str, str, int]], n_txn: int = 0) -> WindowData:
    inter = _interactions(rows)
    txns = _transactions(n_txn) if n_txn else empty_frame("transactions")
    return WindowData(wid, _items(sorted(set(inter["item_id"]))), inter, txns)


def test_history_matrix_right_aligns_and_pads() -> None:
    out = history_matrix([[1, 2], [], [1, 2, 3, 4]], 3)
    assert out.tolist() == [[0, 1, 2], [0, 0, 0], [2, 3, 4]]


def test_rec_examples_use_prior_history_then_window_order() -> None:
    first = _window("w0", [("u1", "a", 0), ("u1", "b", 1), ("u2", "c", 2)])
    model = init_model(TINY, first)
    history = PurchaseHistory(3).update(first.interactions)
    second = _window("w1", [("u1", "c", 10), ("u1", "a", 11), ("u3", "b", 12)])
    ex = rec_examples(model, second.interactions, history)
    idx = {i: int(model.items.lookup(np.array([i], dtype=object))[0]) for i in "abc"}
    assert ex.target_idx.tolist() == [idx["c"], idx["a"], idx["b"]]
    assert ex.hist_idx.tolist() == [[0, idx["a"], idx["b"]], [idx["a"], idx["b"], idx["c"]],
                                    [0, 0, 0]]
    assert ex.user_idx[2] == 0  # u3 unseen by the model's vocab: unknown


def test_batches_cover_each_row_once_per_epoch_and_shards_are_disjoint() -> None:
    rows = [(f"u{i % 7}", f"i{i % 11}", i) for i in range(50)]
    window = _window("w0", rows, n_txn=23)
    model = init_model(TINY, window)
    ex = WindowExamples.build(model, window, PurchaseHistory(3))
    steps = steps_per_epoch(len(ex.rec), len(ex.fraud), 8)
    assert steps == 7
    batches = list(iter_batches(ex, steps, len(model.items), 4, np.random.default_rng(0)))
    assert len(batches) == 7
    assert sum(len(b.rec.target_idx) for b in batches if b.rec) == 50
    assert sum(len(b.fraud.label) for b in batches if b.fraud) == 23
    assert all(b.rec is not None and len(b.rec.neg_idx) == 4 for b in batches)
    a, b = ex.shard(0, 2), ex.shard(1, 2)
    assert len(a.rec) + len(b.rec) == 50 and len(a.fraud) + len(b.fraud) == 23


@pytest.mark.parametrize("schedule,expected", [("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
                                               ("linear", [0.5, 1.0, 1.0, 2 / 3, 1 / 3]),
                                               ("cosine", [0.5, 1.0, 1.0, 0.75, 0.25])])
def test_lr_schedule_warms_up_then_decays(schedule: str, expected: list[float]) -> None:
    cfg = TrainConfig(warmup_frac=0.4, schedule=schedule)  # type: ignore[arg-type]
    got = [lr_factor(step, 5, cfg) for step in range(5)]
    assert got == pytest.approx(expected)


def test_train_config_names_bad_setting() -> None:
    with pytest.raises(ConfigError, match="warmup_frac"):
        TrainConfig(warmup_frac=1.5)
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="step")  # type: ignore[arg-type]


def test_training_reduces_loss_on_a_repeated_window() -> None:
    rows = [(f"u{u}", f"i{(u * 3 + j) % 12}", u * 10 + j) for u in range(12) for j in range(4)]
    window = _window("w0", rows * 4, n_txn=64)
    model = init_model(TINY, window)
    cfg = TrainConfig(epochs=15, batch_size=32, lr=1e-2, warmup_frac=0.0, n_negatives=4,
                      device="cpu")
    stats = train_window(model, window, PurchaseHistory(3), cfg, progress=False)
    first = np.mean([row["loss"] for row in stats.losses[:5]])
    assert stats.steps == 15 * 6
    assert stats.mean_loss(last=5) < 0.7 * first


def test_evaluation_splits_warm_and_cold_users_and_scores_baselines() -> None:
    train = _window("w0", [("u1", "a", 0), ("u1", "b", 1), ("u2", "c", 2)], n_txn=30)
    model = init_model(TINY, train)
    history = PurchaseHistory(3).update(train.interactions)
    nxt = _window("w1", [("u1", "c", 10), ("u1", "a", 10), ("u9", "a", 11), ("u9", "d", 12),
                         ("u9", "a", 13), ("u2", "c", 14)], n_txn=30)
    queries = rec_queries(history, nxt)
    assert queries.user_ids == ["u1", "u2", "u9"]
    assert queries.is_warm.tolist() == [True, True, False]
    assert queries.targets == [["c", "a"], ["c"], ["d"]]
    result = evaluate_rec(model, history, train.interactions, nxt, k=2)
    assert set(result) == {"model", "popularity", "repeat_then_popular"}
    assert result["model"]["warm/n_users"] == 2 and result["model"]["cold/n_users"] == 1
    # u1's own items (b newest, then a) fill k=2 and hit a but not c; u2 repeats c.
    assert result["repeat_then_popular"]["warm/recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    # u9's only target "d" is a new catalogue item that no baseline can rank.
    assert result["popularity"]["cold/recall@2"] == 0.0
    fraud = evaluate_fraud(model, history, nxt)
    assert fraud["n"] == 30 and 0.0 <= fraud["roc_auc"] <= 1.0


def test_init_model_records_fraud_features_and_scaling() -> None:
    window = _window("w0", [("u1", "a", 0)], n_txn=40)
    model = init_model(dataclasses.replace(TINY, fraud_features=("ignored",)), window)
    assert model.cfg.fraud_features == ("f_night",)
    assert len(model.users) == 2 and len(model.items) == 2


def test_replayed_rows_see_only_earlier_purchases() -> None:
    first = _window("w0", [("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2)])
    model = init_model(TINY, first)
    history = PurchaseHistory(3).update(first.interactions)
    # A window mixing a replayed old purchase (a at t=0) with a new one (d at t=10).
    mixed = _window("w1", [("u1", "a", 0), ("u1", "c", 10)])
    ex = rec_examples(model, mixed.interactions, history)
    idx = {i: int(model.items.lookup(np.array([i], dtype=object))[0]) for i in "abc"}
    assert ex.target_idx.tolist() == [idx["a"], idx["c"]]
    assert ex.hist_idx[0].tolist() == [0, 0, 0]  # nothing was bought before a
    assert ex.hist_idx[1].tolist() == [idx["a"], idx["b"], idx["c"]]
