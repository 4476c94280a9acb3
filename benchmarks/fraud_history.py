"""Do the user's purchase history columns help the fraud trees? An offline ablation (#14).

    python benchmarks/fraud_history.py

Since 2026-12-05 the served fraud trees read, besides the amount and the shop's fraud
features, two flags from the user's purchase history (``training.model.fraud_trees.
HISTORY_COLUMNS``, ``training.features.bought_before``): had the paying user bought
anything, and this item, before the payment's window. This measures each
column's share, the trees alone, outside the pipeline, with the protocol of
``benchmarks/fraud_bagging.py``: for each window t, fit on every labelled transaction of
windows <= t - 1 - d (each row's history is the purchases of the windows before its own),
score window t; mean per-window AUC-PR and pooled AUC-PR. Arms: the trees on the table's
columns (as before), with each history column, with both (as served), and
``HistGradientBoostingClassifier(l2_regularization=1.0)`` on the table's columns (the
report's baseline). Sources: the ULB hours (no users: the columns are constant, so the
trees must not change), the demo shop (``make demo``), the 6-week and the 16-week report
shops. Printed and written to ``benchmarks/results/fraud_history.{json,md}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from fraud_bagging import SHOPS, arguments, summary, write_report
from sklearn.ensemble import HistGradientBoostingClassifier

from training.data.schema import transaction_feature_columns
from training.data.sources import load_windows
from training.data.synthetic import SyntheticShopConfig
from training.evaluation.fraud_metrics import average_precision
from training.features.history import PurchaseHistory
from training.model import ModelConfig
from training.model.fraud_trees import HISTORY_COLUMNS, FraudTrees, tree_inputs

DEMO = SyntheticShopConfig(n_windows=4, interactions_per_window=2500,  # the Makefile's DEMO_SHOP
                           transactions_per_window=1200, n_users=600, n_items=300,
                           fraud_rate=0.04)
ARMS: dict[str, tuple[str, ...]] = {
    "table columns": (), "+ bought_before": HISTORY_COLUMNS[:1],
    "+ bought_item_before": HISTORY_COLUMNS[1:], "+ both (served)": HISTORY_COLUMNS,
    "hist_gradient_boosting": (),
}


def with_history(windows: Iterable[Any]) -> list[pd.DataFrame]:
    """Each window's labelled transactions with the history columns, read from the
    purchases of the windows before it (what the pipeline's scoring and the update's
    windowed reads give)."""
    history = PurchaseHistory(ModelConfig().history_len)
    out = []
    for w in windows:
        t = w.transactions[w.transactions["is_fraud"].notna()].copy()
        ids = {c: (t[c].fillna("").astype(str).to_numpy(dtype=object) if c in t
                   else np.full(len(t), "", dtype=object)) for c in ("user_id", "item_id")}
        t[list(HISTORY_COLUMNS)] = history.bought_before(ids["user_id"], ids["item_id"])
        out.append(t)
        history = history.update(w.interactions)
    return out


def inputs(frames: list[pd.DataFrame], extra: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    t = pd.concat(frames, ignore_index=True)
    table = [c for c in transaction_feature_columns(t.columns) if c not in HISTORY_COLUMNS]
    x = tree_inputs(t["amount"].to_numpy(), t[table + list(extra)].to_numpy(np.float64))
    return x, t["is_fraud"].to_numpy(bool)


def logits(arm: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, seed: int) -> np.ndarray:
    if arm == "hist_gradient_boosting":
        hgb = HistGradientBoostingClassifier(l2_regularization=1.0, random_state=seed)
        return np.asarray(hgb.fit(x, y).decision_function(xt))
    trees = FraudTrees.fit(x, y, tuple(f"c{i}" for i in range(x.shape[1])), seed)
    assert trees is not None
    return trees.logits(xt)


def run(txns: list[pd.DataFrame], delay: int, seed: int) -> dict[str, Any]:
    per: dict[str, list[float]] = {arm: [] for arm in ARMS}
    probs: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    labels = []
    for t in range(1 + delay, len(txns)):
        _, y = inputs(txns[:t - delay], ())
        _, yt = inputs([txns[t]], ())
        if y.sum() < 5 or (~y).sum() < 5 or not yt.any():
            continue
        for arm, extra in ARMS.items():
            s = logits(arm, inputs(txns[:t - delay], extra)[0], y,
                       inputs([txns[t]], extra)[0], seed)
            per[arm].append(average_precision(yt, s))
            probs[arm].append(1.0 / (1.0 + np.exp(-s)))
        labels.append(yt)
    return summary(per, probs, labels)


def main() -> None:
    args = arguments(__doc__, "fraud_history")
    sources = {"ulb-hours": with_history(load_windows("ulb", args.ulb, "hour"))}
    for name, cfg in {"demo-shop": DEMO, **SHOPS}.items():
        sources[name] = with_history(load_windows("synthetic", synthetic=cfg))
    write_report([{"source": name, "delay": d, **run(txns, d, args.seed)}
                  for name, txns in sources.items() for d in (0, 1)], args.out)


if __name__ == "__main__":
    main()
