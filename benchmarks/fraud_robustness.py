"""How far does each fraud method fall when transactions move? Noise and evasion, per method.

    python benchmarks/fraud_robustness.py --run ours=runs/demo/report/metrics.json \\
        --run ours_fgm=runs/demo-fgm/report/metrics.json --out benchmarks/results/robustness

Reads finished pipeline runs (``cluster.pipeline`` with ``--keep-last`` at least the number
of windows, so every live version is still in the store; the first run's windows, settings
and label delay are used for all). On every scored window ``t`` each method scores the same
labelled transactions, unchanged and moved, with the model it had when ``t`` began: ours'
live version from each run's store as served (``<run>``: head, trees and calibration as the
version blends them) and its neural head alone (``<run>_head``: where FGM/PGD acts), and
HistGradientBoosting (l2=1.0) fitted on the labels that had arrived (the pipeline's own
baseline class). Scores are pooled over the windows.

Moves, in units of each column's standard deviation over the windows before ``t`` (amount
and every fraud feature), clipped to the range seen before ``t`` so every moved value is
one a real transaction has had:

* ``noise``: every transaction, Gaussian noise of ``eps`` std (measurement noise, drift);
* ``evasion``: frauds only, each column moved up to ``eps`` std toward the legitimate
  transactions' mean (a fraudster imitating normal behaviour, black-box: no gradients, so
  the same attack for trees and the neural head).

Written: ``<out>.json``, ``<out>.md`` and ``<out>.png`` (pooled AUC-PR against ``eps``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cluster.comparison.evaluation import GradientBoostingFraud, WindowContext, build_contexts
from cluster.comparison.report_data import update_setting
from cluster.comparison.tables import markdown_table
from training.cli import setup_logging
from training.data.labels import known_at
from training.data.schema import WindowData
from training.data.sources import load_windows, merge_windows
from training.evaluation.evaluate import fraud_labels_scores
from training.evaluation.fraud_metrics import fraud_metrics
from training.model import ShopStreamModel, load_model
from training.model.calibration import FraudCalibration
from training.store import open_store

KINDS = ("noise", "evasion")
EPSILONS = (0.0, 0.1, 0.25, 0.5, 1.0)
HGB = "hist_gradient_boosting"


def move(txns: pd.DataFrame, before: pd.DataFrame, columns: list[str], kind: str, eps: float,
         rng: np.random.Generator) -> pd.DataFrame:
    """``txns`` with ``columns`` moved by ``kind`` at ``eps`` std (statistics of ``before``)."""
    if eps == 0:
        return txns
    out = txns.copy()
    ref = before[columns].astype(float)
    std = ref.std().replace(0, 1.0).to_numpy()
    low, high = ref.min().to_numpy(), ref.max().to_numpy()
    x = np.array(out[columns].to_numpy(dtype=np.float64), copy=True)
    if kind == "noise":
        x = x + rng.normal(size=x.shape) * eps * std
    else:
        legit = before[before["is_fraud"] == 0][columns].astype(float).mean().to_numpy()
        fraud = (out["is_fraud"] == 1).to_numpy()
        gap = legit - x[fraud]
        x[fraud] = x[fraud] + np.clip(gap, -eps * std, eps * std)
    out[columns] = np.clip(x, low, high)
    return out


def run_windows(metrics: dict[str, Any]) -> list[WindowData]:
    work = Path(metrics["settings"]["pipeline"]["work_dir"])
    folders = sorted(work.glob("windows-*"))
    if not folders:
        raise SystemExit(f"--run: no windows-* folder in the run's work dir {work}")
    return list(load_windows("windows", str(folders[0])))


def head_only(model: ShopStreamModel) -> ShopStreamModel:
    """A copy that scores with the neural head alone (no trees, no calibration): where
    adversarial training acts."""
    copy = deepcopy(model)
    copy.set_fraud_trees(None, 0.0)
    copy.set_fraud_calibration(FraudCalibration())
    return copy


def load_version(metrics: dict[str, Any], version: str, window_id: str
                 ) -> tuple[ShopStreamModel, ShopStreamModel]:
    """(as served, head alone) of ``version``, which ours served when the window after
    ``window_id`` began."""
    store = open_store(str(update_setting(metrics, "store", "uri")
                           or metrics["settings"]["incremental"]["store"]))
    if version not in store.list_versions():
        raise SystemExit(f"--run: version {version} (live after {window_id}) is no longer "
                         f"in {store.uri}; run the pipeline with --keep-last at least its "
                         "number of windows")
    with tempfile.TemporaryDirectory() as tmp:
        store.load(version, Path(tmp))
        served = load_model(Path(tmp))
    return served, head_only(served)


@dataclass
class Case:
    """One scored window, everything but the move prepared once: its context, the
    transactions before it (the moves' statistics), the fitted tree baseline and each
    method's models ({name: model})."""

    ctx: WindowContext
    before: pd.DataFrame
    hgb: GradientBoostingFraud
    models: dict[str, ShopStreamModel]


def cases(runs: dict[str, dict[str, Any]], seed: int) -> list[Case]:
    first = next(iter(runs.values()))
    windows = run_windows(first)
    delay = int(update_setting(first, "continual", "label_delay") or 0)
    tail = float(update_setting(first, "continual", "holdout_frac") or 0.0)
    contexts = build_contexts(windows, int(first["settings"]["model"]["history_len"]))
    loaded: dict[tuple[str, str], tuple[ShopStreamModel, ShopStreamModel]] = {}
    out = []
    for t in range(1, len(windows)):
        before = merge_windows(windows[:t]).transactions
        labelled = before[before["is_fraud"].notna()]
        ctx = contexts[t]
        if labelled.empty or not ctx.window.transactions["is_fraud"].notna().any():
            continue
        seen = merge_windows(known_at(windows[:t], delay, tail_frac=tail))
        hgb = GradientBoostingFraud(seed)
        hgb.fit(seen.transactions, list(seen.fraud_features))
        models: dict[str, ShopStreamModel] = {}
        for name, metrics in runs.items():
            version = metrics["updates"][windows[t - 1].window_id]["incremental"][
                "live_version"]
            if (name, version) not in loaded:  # a rejected update leaves the same version
                loaded[(name, version)] = load_version(metrics, version,
                                                       windows[t - 1].window_id)
            models[name], models[f"{name}_head"] = loaded[(name, version)]
        out.append(Case(ctx, labelled, hgb, models))
    return out


def pooled_scores(prepared: list[Case], kind: str, eps: float,
                  seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{method: (labels, scores)} pooled over every scored window, moved by (kind, eps)."""
    rng = np.random.default_rng(seed)
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for case in prepared:
        window = case.ctx.window
        columns = ["amount", *window.fraud_features]
        moved = replace(window, transactions=move(
            window.transactions, case.before, columns, kind, eps, rng))
        pooled.setdefault(HGB, []).append(case.hgb.labels_scores(moved))
        for name, model in case.models.items():
            pooled.setdefault(name, []).append(
                fraud_labels_scores(model, case.ctx.history, moved))
    return {m: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            for m, parts in pooled.items()}


def measure(runs: dict[str, dict[str, Any]], epsilons: tuple[float, ...],
            seed: int) -> list[dict[str, Any]]:
    prepared = cases(runs, seed)
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        for eps in epsilons:
            for method, (labels, scores) in pooled_scores(prepared, kind, eps, seed).items():
                m = fraud_metrics(labels, scores)
                rows.append({"kind": kind, "eps": eps, "method": method,
                             "auc_pr": m["auc_pr"], "roc_auc": m["roc_auc"],
                             "n": int(m["n"]), "n_frauds": int(m["n_pos"])})
    clean = {r["method"]: r["auc_pr"] for r in rows if r["eps"] == 0 and r["kind"] == "noise"}
    for r in rows:
        r["relative"] = r["auc_pr"] / clean[r["method"]] if clean[r["method"]] else float("nan")
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, KINDS):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = [(r["eps"], r["auc_pr"]) for r in rows
                   if r["kind"] == kind and r["method"] == method]
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.set(title=kind, xlabel="eps (std of each column)", ylabel="pooled AUC-PR")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True,
                        help="LABEL=path/to/metrics.json of a finished pipeline run")
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/robustness"))
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    runs = {}
    for spec in args.run:
        label, _, path = spec.partition("=")
        if not path:
            parser.error(f"--run: expected LABEL=path/to/metrics.json, got {spec!r}")
        runs[label] = json.loads(Path(path).read_text())
    rows = measure(runs, tuple(sorted(set([0.0, *args.eps]))), args.seed)
    table = markdown_table(["kind", "eps", "method", "auc_pr", "relative", "roc_auc",
                            "n", "n_frauds"],
                           [[r["kind"], f"{r['eps']:g}", r["method"], f"{r['auc_pr']:.4f}",
                             f"{r['relative']:.3f}", f"{r['roc_auc']:.4f}", str(r["n"]),
                             str(r["n_frauds"])] for r in rows])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"runs": args.run, "rows": rows},
                                                        indent=2))
    args.out.with_suffix(".md").write_text(table + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"written: {args.out}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
