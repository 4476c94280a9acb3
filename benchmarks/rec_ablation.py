"""What makes the recommender repeat-aware: a model trained from scratch on windows 0..t-1,
scored on window t against repeat-then-popular and popularity, per variant.

    python benchmarks/rec_ablation.py --path ../shared/data/online_retail \
        --freq month --at 1 2 --variants default no_repeat_features two_epochs

Every variant trains with the one engine (``training.fit.engine.fit``) on
``WindowExamples.build_over`` (each window's rows against the history as of that window's
start) and is scored with the pipeline's own evaluation (``cluster.comparison.evaluation``:
same users, targets and pool as the baselines). A variant changes one thing: no repeat features in
training, more epochs, another learning rate. Printed and written to
``benchmarks/results/rec_ablation_<freq>.{json,md}``: warm/all/cold NDCG@20 and the
repeat-item / new-to-user split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cluster.comparison.evaluation import baseline_rec, build_contexts, model_rec, pool_matrix
from training.config import TrainConfig
from training.data.sources import load_windows, merge_windows
from training.data.synthetic_config import SyntheticShopConfig
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.engine import WorkerSettings, fit
from training.fit.loop import init_model
from training.model import ModelConfig

# The shop `make demo` runs on (its DEMO_SHOP flags).
DEMO_SHOP = SyntheticShopConfig(n_windows=4, interactions_per_window=2500,
                                transactions_per_window=1200, n_users=600, n_items=300,
                                fraud_rate=0.04)
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("warm/ndcg@20", "ndcg@20", "cold/ndcg@20", "warm_repeat/ndcg@20", "warm_new/ndcg@20")
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_repeat_features": {"no_repeat": True},
    "two_epochs": {"epochs": 2},
    "half_lr": {"lr": 1e-3},
    "repeat_prior": {"model": {"repeat_prior": 1.0}},
    "five_epochs": {"epochs": 5},
    "ten_epochs": {"epochs": 10},
    "twenty_epochs": {"epochs": 20},
}


def train_and_score(windows: list, contexts: list, t: int, variant: dict[str, Any]
                    ) -> dict[str, float]:
    model_cfg = ModelConfig(finetune_layers=0, **variant.get("model", {}))
    train_cfg = TrainConfig(epochs=variant.get("epochs", 1), lr=variant.get("lr", 2e-3),
                            device="cpu")
    model = init_model(model_cfg, merge_windows(windows[:t]))
    model.text.use_shared_cache()
    examples = WindowExamples.build_over(model, windows[:t],
                                         PurchaseHistory(model_cfg.history_len))
    if variant.get("no_repeat"):
        examples.rec.rep_items[:] = 0
        examples.rec.rep_feats[:] = 0.0
    trained = fit(model, examples, train_cfg, WorkerSettings()).model.eval()
    ctx = contexts[t]
    return model_rec(trained, ctx, pool_matrix(trained, ctx.pool, ctx.titles), 20)


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| window | method | " + " | ".join(KEYS) + " |",
           "|---" * (len(KEYS) + 2) + "|"]
    for row in rows:
        out.append(f"| {row['window']} | {row['method']} | "
                   + " | ".join(f"{row[k]:.4f}" for k in KEYS) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="online_retail",
                        choices=["online_retail", "synthetic"],
                        help="synthetic = the shop `make demo` runs on")
    parser.add_argument("--path", default="../shared/data/online_retail")
    parser.add_argument("--freq", default="month", choices=["day", "week", "month"])
    parser.add_argument("--at", nargs="+", type=int, default=[1, 2],
                        help="positions of the scored windows (trained on all before)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    windows = list(load_windows(args.source, args.path, args.freq, DEMO_SHOP))
    contexts = build_contexts(windows, ModelConfig().history_len)
    rows: list[dict[str, Any]] = []
    for t in args.at:
        for name, (metrics, _) in baseline_rec(contexts[t], 20).items():
            rows.append({"window": windows[t].window_id, "method": name,
                         **{k: float(metrics[k]) for k in KEYS}})
        for name in args.variants:
            began = time.perf_counter()
            metrics = train_and_score(windows, contexts, t, VARIANTS[name])
            rows.append({"window": windows[t].window_id, "method": f"model:{name}",
                         "seconds": time.perf_counter() - began,
                         **{k: float(metrics[k]) for k in KEYS}})
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    name = args.freq if args.source == "online_retail" else args.source
    out = RESULTS / f"rec_ablation_{name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"settings": {"freq": args.freq, "at": args.at,
                      "variants": {v: VARIANTS[v] for v in args.variants},
                      "model": dataclasses.asdict(ModelConfig(finetune_layers=0))},
         "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
