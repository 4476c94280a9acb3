"""A tiny shop for the training unit tests: one window, a tiny random-BERT model config and
a fast training config (shared by the engine and in-process trainer tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import TrainConfig
from training.data.schema import WindowData
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.loop import init_model
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig

TINY = ModelConfig(encoder_init="tiny_random", finetune_layers=1, dim=16, history_len=3,
                   fraud_hidden=16, max_title_tokens=8)
CFG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, encoder_lr=1e-3, warmup_frac=0.0,
                  n_negatives=4, device="cpu", seed=0)
# A tiny model and one quick pass: what the multi-window update tests (staleness policy,
# label delay) train with on their tiny synthetic shops.
RUN_MODEL = ModelConfig(encoder_init="tiny_random", dim=16, history_len=3)
RUN_TRAIN = TrainConfig(epochs=1, batch_size=64, n_negatives=8)
BASE = pd.Timestamp("2024-01-01", tz="UTC")


def update_config(store: object, **changes: object) -> IncrementalConfig:
    """An update on the synthetic source into ``store``, in this process, with no tuned
    config and a gate that promotes (the multi-window update tests' settings)."""
    return IncrementalConfig.of(source="synthetic", store=str(store), trainer="local",
                                use_best_config=False, gate_tolerance=1.0, **changes)


def ts_range(n: int) -> pd.Series:
    return pd.Series([BASE + pd.Timedelta(minutes=m) for m in range(n)]).astype(
        "datetime64[us, UTC]")


def tiny_window() -> WindowData:
    """20 purchases over 8 items by 5 users, 12 labelled transactions (every 3rd fraud)."""
    n, m = 20, 12
    inter = pd.DataFrame({"user_id": [f"u{i % 5}" for i in range(n)],
                          "item_id": [f"i{(i * 3) % 8}" for i in range(n)], "ts": ts_range(n),
                          "event": "purchase", "quantity": 1, "price": 1.0})
    ids = [f"i{i}" for i in range(8)]
    items = pd.DataFrame({"item_id": ids, "title": [f"blue widget {i}" for i in ids],
                          "category": "x", "price": 1.0, "first_seen": ts_range(8)})
    fraud = np.arange(m) % 3 == 0
    txns = pd.DataFrame({"txn_id": [f"t{i}" for i in range(m)],
                         "user_id": [f"u{i % 5}" for i in range(m)], "item_id": None,
                         "ts": ts_range(m), "amount": np.where(fraud, 400.0, 12.0) + np.arange(m),
                         "is_fraud": fraud, "f_night": fraud.astype(float)})
    return WindowData("w0", items, inter, txns)


def tiny_examples(history_rows: int) -> WindowExamples:
    """:func:`tiny_window`'s examples against a history of its first ``history_rows``
    purchases."""
    window = tiny_window()
    history = PurchaseHistory(TINY.history_len).update(window.interactions.iloc[:history_rows])
    return WindowExamples.build(init_model(TINY, window), window, history)
