"""Would averaging five boosted models beat one? An offline check of the fraud trees (#14).

    python benchmarks/fraud_bagging.py

The served fraud score is one LightGBM model with HistGradientBoosting's settings
(``training.model.fraud_trees``), and on several recorded runs it trails the
HistGradientBoosting baseline by a little (within the paired intervals). Few frauds make a
boosted model's variance large, and averaging models fitted on subsamples cuts variance
(subagging; Bühlmann & Yu, Ann. Statist. 2002). The candidate, fixed before any run: five
models, each fitted as the served trees on a stratified 4/5 of the rows (every model sees
4/5 of the frauds), raw scores averaged.

Protocol, per source and label delay d: for each window t, fit on every labelled
transaction of windows <= t - 1 - d (all rows, no replay reservoir: the trees alone, outside
the pipeline), score window t; mean per-window AUC-PR and pooled AUC-PR (probabilities
concatenated over windows) for one model, the five-model average and
``HistGradientBoostingClassifier(l2_regularization=1.0)``. Sources: the ULB hours, the 6-week
report shop and the 16-week shop of ``reports/synthetic/``. Printed and written to
``benchmarks/results/fraud_bagging.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from training.data.schema import transaction_feature_columns
from training.data.sources import load_windows
from training.data.synthetic import SyntheticShopConfig
from training.evaluation.fraud_metrics import average_precision
from training.model.fraud_trees import FraudTrees, tree_inputs

SHOPS = {  # the recorded synthetic reports' settings (reports/README.md)
    "shop-6weeks": SyntheticShopConfig(n_windows=6, interactions_per_window=2500,
                                       transactions_per_window=1200, n_users=600, n_items=300,
                                       fraud_rate=0.04),
    "shop-16weeks": SyntheticShopConfig(n_windows=16, interactions_per_window=4000,
                                        transactions_per_window=2000, n_users=1500,
                                        n_items=600, fraud_rate=0.02),
}
Scorer = Callable[[np.ndarray], np.ndarray]


def inputs(frames: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """(the trees' inputs: amount + the fraud features, labels) of the labelled rows."""
    t = pd.concat(frames, ignore_index=True)
    t = t[t["is_fraud"].notna()]
    features = t[transaction_feature_columns(t.columns)]
    return tree_inputs(t["amount"].to_numpy(), features.to_numpy()), t["is_fraud"].to_numpy(bool)


def scorers(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Scorer]:
    cols = tuple(f"c{i}" for i in range(x.shape[1]))
    one = FraudTrees.fit(x, y, cols, seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)
    five = [FraudTrees.fit(x[rows], y[rows], cols, seed) for rows, _ in folds]
    hgb = HistGradientBoostingClassifier(l2_regularization=1.0, random_state=seed).fit(x, y)
    assert one is not None and all(m is not None for m in five)
    return {"one model": one.logits,
            "five averaged": lambda z: np.mean([m.logits(z) for m in five if m], axis=0),
            "hist_gradient_boosting": hgb.decision_function}


def run(txns: list[pd.DataFrame], delay: int, seed: int) -> dict[str, Any]:
    per: dict[str, list[float]] = {}
    probs: dict[str, list[np.ndarray]] = {}
    labels = []
    for t in range(1 + delay, len(txns)):
        x, y = inputs(txns[:t - delay])
        xt, yt = inputs([txns[t]])
        if y.sum() < 5 or (~y).sum() < 5 or not yt.any():
            continue
        for name, score in scorers(x, y, seed).items():
            s = score(xt)
            per.setdefault(name, []).append(average_precision(yt, s))
            probs.setdefault(name, []).append(1.0 / (1.0 + np.exp(-s)))
        labels.append(yt)
    return summary(per, probs, labels)


def summary(per: dict[str, list[float]], probs: dict[str, list[np.ndarray]],
            labels: list[np.ndarray]) -> dict[str, Any]:
    """One source and delay: each arm's mean per-window AP, its APs window by window and the
    AP of its probabilities pooled over the windows."""
    y_all = np.concatenate(labels)
    return {"windows": len(labels), "frauds": int(y_all.sum()),
            "per_window_ap": {k: float(np.mean(v)) for k, v in per.items()},
            "each_window_ap": {k: [round(a, 4) for a in v] for k, v in per.items()},
            "pooled_ap": {k: average_precision(y_all, np.concatenate(v))
                          for k, v in probs.items()}}


def arguments(doc: str, name: str) -> argparse.Namespace:
    """The offline fraud checks' command line (``--ulb``, ``--seed``, ``--out``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--ulb", default="../shared/data/ulb_creditcard/creditcard_first_6h.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{name}"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    return args


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    """Print the table of :func:`summary` rows; write it (.md) and the rows (.json)."""
    names = " / ".join(rows[0]["per_window_ap"]) if rows else ""
    lines = [f"| source | delay | windows (frauds) | per-window AP: {names} "
             f"| pooled AP: {names} |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['delay']} | {r['windows']} ({r['frauds']}) | "
                     + " / ".join(f"{v:.4f}" for v in r["per_window_ap"].values()) + " | "
                     + " / ".join(f"{v:.4f}" for v in r["pooled_ap"].values()) + " |")
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = arguments(__doc__, "fraud_bagging")
    sources = {"ulb-hours": [w.transactions for w in load_windows("ulb", args.ulb, "hour")]}
    for name, cfg in SHOPS.items():
        sources[name] = [w.transactions for w in load_windows("synthetic", synthetic=cfg)]
    rows = [{"source": name, "delay": d, **run(txns, d, args.seed)}
            for name, txns in sources.items() for d in (0, 1)]
    write_report(rows, args.out)


if __name__ == "__main__":
    main()
