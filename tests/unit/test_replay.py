"""ReplayBuffer: what it keeps, uniform bottom-k reservoirs, sampling, mixing, persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.data.schema import WindowData, empty_frame
from training.features.replay import KEY_COLUMN, ReplayBuffer, ReplayError, _keys, _smallest

pytestmark = pytest.mark.unit

BASE = pd.Timestamp("2024-01-01", tz="UTC")


def _ts(minutes: np.ndarray) -> pd.Series:
    return pd.Series(BASE + pd.to_timedelta(minutes, unit="min")).astype("datetime64[us, UTC]")


def make_window(wid: str, n_purchases: int, n_views: int = 0, n_txn: int = 0,
                features: tuple[str, ...] = ("f_a", "f_b"), start: int = 0) -> WindowData:
    """Purchases of item ``<wid>-p<i>`` by user ``<wid>-u<i % 5>``; every 4th txn unlabelled."""
    n = n_purchases + n_views
    inter = pd.DataFrame({
        "user_id": [f"{wid}-u{i % 5}" for i in range(n)],
        "item_id": [f"{wid}-p{i}" for i in range(n)],
        "ts": _ts(np.arange(start, start + n)),
        "event": ["purchase"] * n_purchases + ["view"] * n_views,
        "quantity": np.ones(n, dtype=np.int64), "price": np.full(n, 2.5)})
    items = pd.DataFrame({"item_id": inter["item_id"], "title": [f"title of {i}" for i in
                                                                  inter["item_id"]],
                          "category": "c", "price": 2.5, "first_seen": _ts(np.zeros(n))})
    txns = empty_frame("transactions")
    if n_txn:
        label = pd.Series([bool(i % 2) if i % 4 else None for i in range(n_txn)],
                          dtype="boolean")
        txns = pd.DataFrame({
            "txn_id": [f"{wid}-t{i}" for i in range(n_txn)],
            "user_id": [f"{wid}-u{i % 5}" for i in range(n_txn)],
            "item_id": [f"{wid}-p{i}" if i < n_purchases else None for i in range(n_txn)],
            "ts": _ts(np.arange(start, start + n_txn)), "amount": np.arange(n_txn) + 1.0,
            "is_fraud": label, **{f: np.arange(n_txn) * 0.5 for f in features}})
    return WindowData(wid, items, inter, txns)


def test_keeps_purchases_and_labelled_transactions_with_their_titles():
    buffer = ReplayBuffer(capacity=100, seed=1)
    buffer.add_window(make_window("w0", n_purchases=6, n_views=4, n_txn=8))
    assert buffer.seen == {"interactions": 6, "transactions": 6}
    assert buffer.counts() == {"interactions": 6, "transactions": 6, "items": 6}
    assert len(buffer) == 12 and buffer.feature_columns == ["f_a", "f_b"]
    inter, txns, items = (buffer.frame(t) for t in ("interactions", "transactions", "items"))
    assert set(inter["event"]) == {"purchase"} and txns["is_fraud"].notna().all()
    assert sorted(txns["txn_id"]) == ["w0-t1", "w0-t2", "w0-t3", "w0-t5", "w0-t6", "w0-t7"]
    assert list(txns.columns) == ["txn_id", "user_id", "item_id", "ts", "amount", "is_fraud",
                                  "f_a", "f_b", KEY_COLUMN]
    assert sorted(items["item_id"]) == [f"w0-p{i}" for i in range(6)]  # no viewed-only items
    assert items.set_index("item_id").loc["w0-p3", "title"] == "title of w0-p3"


def test_reservoir_holds_the_capacity_smallest_keys_whatever_the_window_order():
    windows = [make_window("w0", 30), make_window("w1", 5), make_window("w2", 12)]
    forward, backward = ReplayBuffer(10, seed=3), ReplayBuffer(10, seed=3)
    for window in windows:
        forward.add_window(window)
    for window in reversed(windows):
        backward.add_window(window)
    keys = np.concatenate([_keys(3, "interactions", w.window_id, len(w.interactions))
                           for w in windows])
    items = pd.concat([w.interactions["item_id"] for w in windows]).to_numpy()
    want = items[np.argsort(keys)[:10]].tolist()
    assert forward.frame("interactions")["item_id"].tolist() == want
    assert backward.frame("interactions")["item_id"].tolist() == want
    assert forward.seen == {"interactions": 47, "transactions": 0}
    other = ReplayBuffer(10, seed=4)
    for window in windows:
        other.add_window(window)
    assert other.frame("interactions")["item_id"].tolist() != want


def test_reservoir_is_uniform_over_rows_not_windows():
    # The buffer keeps exactly the smallest keys (test above), so uniformity is a property
    # of the keys: check it over many seeds without building frames.
    sizes = {"big": 200, "mid": 50, "small": 25}
    kept = []
    for seed in range(2000):
        keys = np.concatenate([_keys(seed, "interactions", w, n) for w, n in sizes.items()])
        source = np.repeat(np.arange(3), list(sizes.values()))[_smallest(keys, 55)]
        kept.append(np.bincount(source, minlength=3))
    # each row is kept with probability 55 / 275 = 0.2: 40, 10, 5 rows expected
    np.testing.assert_allclose(np.mean(kept, axis=0), [40, 10, 5], atol=0.25)
    assert np.mean([k[2] == 0 for k in kept]) < 0.02  # small windows are not crowded out


def test_bad_windows_and_settings_are_named():
    buffer = ReplayBuffer(10)
    buffer.add_window(make_window("w0", 3, n_txn=4))
    with pytest.raises(ReplayError, match=r"^transactions: .*missing \['f_b'\], "
                                          r"unexpected \['f_c'\]"):
        buffer.add_window(make_window("w1", 3, n_txn=4, features=("f_a", "f_c")))
    assert buffer.windows == ["w0"] and buffer.seen["interactions"] == 3  # nothing taken
    broken = make_window("w1", 3, n_txn=4)
    broken.transactions = broken.transactions.drop(columns="amount")
    with pytest.raises(ReplayError, match="^transactions of 'w1': does not fit"):
        buffer.add_window(broken)
    assert buffer.seen == {"interactions": 3, "transactions": 3} and len(buffer) == 6
    with pytest.raises(ReplayError, match="^window_id: 'w0' was already added"):
        buffer.add_window(make_window("w0", 3))
    with pytest.raises(ReplayError, match="^capacity:"):
        ReplayBuffer(0)
    with pytest.raises(ReplayError, match="^ratio:"):
        buffer.mix(make_window("w2", 2), -0.5, seed=0)
    with pytest.raises(ReplayError, match="^n_transactions:"):
        buffer.sample(1, -1, seed=0)


def test_sample_is_capped_without_replacement_and_brings_titles():
    buffer = ReplayBuffer(capacity=20, seed=0)
    buffer.add_window(make_window("w0", 8, n_txn=8))
    buffer.add_window(make_window("w1", 9, n_txn=4, start=100))
    held = buffer.counts()
    assert held["interactions"] == 17 and held["transactions"] == 9
    replay = buffer.sample(5, 50, seed=7)
    assert replay.window_id == "replay"
    assert replay.counts() == {"items": replay.counts()["items"], "interactions": 5,
                               "transactions": 9}
    assert replay.interactions["item_id"].is_unique and replay.transactions["txn_id"].is_unique
    assert KEY_COLUMN not in replay.interactions.columns
    wanted = set(replay.interactions["item_id"]) | set(replay.transactions["item_id"].dropna())
    assert set(replay.items["item_id"]) == wanted
    again = buffer.sample(5, 50, seed=7)
    pd.testing.assert_frame_equal(again.interactions, replay.interactions)
    assert buffer.sample(5, 0, seed=8).interactions["item_id"].tolist() != \
        replay.interactions["item_id"].tolist()


def test_mix_adds_ratio_times_the_window_rows_with_original_timestamps():
    buffer = ReplayBuffer(capacity=50, seed=0)
    buffer.add_window(make_window("w0", 30, n_txn=20))
    window = make_window("w1", 10, n_views=5, n_txn=8, start=1000)
    assert buffer.mix(window, 0.0, seed=1) is window
    mixed = buffer.mix(window, 0.5, seed=1)
    # 10 purchases -> 5 replayed; 6 labelled transactions -> 3 replayed
    assert len(mixed.interactions) == 15 + 5 and len(mixed.transactions) == 8 + 3
    pd.testing.assert_frame_equal(mixed.interactions.iloc[:15], window.interactions)
    replayed = mixed.interactions.iloc[15:]
    assert replayed["item_id"].str.startswith("w0-").all()
    assert (replayed["ts"] < BASE + pd.Timedelta(minutes=30)).all()
    assert mixed.window_id == "w1" and mixed.fraud_features == ["f_a", "f_b"]
    titles = mixed.items.set_index("item_id")["title"]
    assert all(titles[i] == f"title of {i}" for i in replayed["item_id"])
    assert len(mixed.items) == 15 + mixed.items["item_id"].str.startswith("w0-").sum()
    with pytest.raises(ReplayError, match="^transactions:"):
        buffer.mix(make_window("w2", 2, n_txn=2, features=("f_a",)), 1.0, seed=0)


def test_save_load_round_trip_continues_exactly(tmp_path):
    buffer = ReplayBuffer(capacity=12, seed=5)
    buffer.add_window(make_window("w0", 10, n_txn=10))
    buffer.add_window(make_window("w1", 10, n_txn=6, start=50))
    paths, meta = buffer.save(tmp_path)
    assert [p.name for p in paths] == ["replay_interactions.parquet",
                                       "replay_transactions.parquet", "replay_items.parquet"]
    meta = json.loads(json.dumps(meta))
    assert meta["seen"] == {"interactions": 20, "transactions": 11}
    assert (meta["capacity"], meta["seed"], meta["feature_columns"]) == (12, 5, ["f_a", "f_b"])
    loaded = ReplayBuffer.load(tmp_path, meta)
    for table in ("interactions", "transactions", "items"):
        pd.testing.assert_frame_equal(loaded.frame(table), buffer.frame(table))
    nxt = make_window("w2", 10, n_txn=6, start=90)
    buffer.add_window(nxt)
    loaded.add_window(nxt)
    for table in ("interactions", "transactions", "items"):
        pd.testing.assert_frame_equal(loaded.frame(table), buffer.frame(table))
    assert loaded.seen == buffer.seen and loaded.windows == ["w0", "w1", "w2"]
    with pytest.raises(ReplayError, match="format_version"):
        ReplayBuffer.load(tmp_path, {**meta, "format_version": 99})
    (tmp_path / "replay_items.parquet").unlink()
    with pytest.raises(ReplayError, match=r"replay_items\.parquet: file is missing"):
        ReplayBuffer.load(tmp_path, meta)


def test_an_empty_buffer_round_trips_and_samples_nothing(tmp_path):
    buffer = ReplayBuffer(capacity=4)
    buffer.add_window(WindowData("w0"))
    _, meta = buffer.save(tmp_path)
    loaded = ReplayBuffer.load(tmp_path, json.loads(json.dumps(meta)))
    assert len(loaded) == 0 and loaded.feature_columns is None
    replay = loaded.sample(3, 3, seed=0)
    assert replay.counts() == {"items": 0, "interactions": 0, "transactions": 0}


def test_a_mixed_window_feeds_the_training_pipeline():
    from training.config import TrainConfig
    from training.features.examples import WindowExamples
    from training.features.history import PurchaseHistory
    from training.fit.loop import init_model, prepare_window, train_window
    from training.model import ModelConfig

    old, new = make_window("w0", 12, n_txn=12), make_window("w1", 6, n_txn=8, start=100)
    buffer = ReplayBuffer(capacity=20)
    buffer.add_window(old)
    cfg = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3, fraud_hidden=8,
                      max_title_tokens=8)
    model = init_model(cfg, new)  # a model that never saw w0
    mixed = buffer.mix(new, 1.0, seed=0)
    counts = prepare_window(model, mixed)
    replayed = set(mixed.interactions["item_id"]) | set(mixed.transactions["item_id"].dropna())
    assert counts["items"] == len(replayed - set(new.items["item_id"])) > 0
    assert all(t.startswith("title of") for t in model.item_titles[1:])
    examples = WindowExamples.build(model, mixed, PurchaseHistory(3))
    assert (len(examples.rec), len(examples.fraud)) == (12, 6 + 6)
    stats = train_window(model, mixed, PurchaseHistory(3),
                         TrainConfig(batch_size=8, n_negatives=2, device="cpu"), progress=False)
    assert stats.steps == 2 and np.isfinite(stats.mean_loss())


def test_a_gate_sample_can_avoid_the_rows_mixed_into_training():
    buffer = ReplayBuffer(capacity=50, seed=0)
    buffer.add_window(make_window("w0", 30, n_txn=20))  # 30 purchases, 15 labelled held
    window = make_window("w1", 10, n_txn=8, start=1000)
    mixed = buffer.mix(window, 1.0, seed=3)  # 10 purchases + 6 labelled replayed
    trained = set(mixed.interactions["item_id"]) | set(mixed.transactions["txn_id"])
    same_seed = buffer.sample(10, 6, seed=3)
    assert set(same_seed.interactions["item_id"]) <= trained  # why exclude exists
    gate = buffer.sample(100, 100, seed=3, exclude=mixed)
    assert gate.counts()["interactions"] == 30 - 10 and gate.counts()["transactions"] == 15 - 6
    assert not trained & (set(gate.interactions["item_id"]) | set(gate.transactions["txn_id"]))
