"""The plot of benchmarks/forgetting.py: per-method metrics on the early windows' tails after
every update, FGM robustness, and mean forgetting per method (matplotlib, Agg backend).

    python benchmarks/forgetting.py --quick      # this module has no entry point
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from forgetting_report import (
    REGIMES,
    aggregate,
    matrix,
    methods_of,
    metric_names,
    robustness_summary,
)

logger = logging.getLogger(__name__)


def _seed_mean(result: dict[str, Any], method: str, metric: str) -> np.ndarray:
    mats = [matrix(r, metric) for r in result["runs"] if r["method"] == method]
    return np.nanmean(np.stack(mats), axis=0) if len(mats) > 1 else mats[0]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = methods_of(result)
    metrics = [metric_names(result)[0], "auc_pr"]
    shift = result["seeds"][0]["shift_window"]
    n = len(result["runs"][0]["updates"])
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for row, metric in enumerate(metrics):
        for col in range(2):
            ax = axes[row][col]
            if col >= n:
                ax.axis("off")
                continue
            for method in methods:
                m = _seed_mean(result, method, metric)
                ax.plot(range(col, n), m[col:, col], marker="o", label=method)
            if metric.startswith("ndcg"):
                pop = [s["windows"][col]["popularity"].get(metric) for s in result["seeds"]]
                if all(p is not None for p in pop):
                    ax.axhline(float(np.mean(pop)), color="grey", ls="--", lw=1,
                               label="popularity (fixed)")
            if shift < n:
                ax.axvline(shift - 0.5, color="k", ls=":", lw=1)
                ax.text(shift - 0.45, ax.get_ylim()[1], "shift", va="top", fontsize=8)
            ax.set_xticks(range(n))
            ax.set_xlabel("after update t (trained on window t)")
            ax.set_title(f"{metric} on window {col}'s held-out tail")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    _plot_robustness(axes[0][2], result)
    _plot_forgetting_bars(axes[1][2], result, metrics)
    fig.suptitle(f"Forgetting on the synthetic drifting shop ({result['mode']} mode, seeds "
                 f"{[s['seed'] for s in result['seeds']]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_robustness(ax: Any, result: dict[str, Any]) -> None:
    by_regime = robustness_summary(result)
    regime = REGIMES[False] if REGIMES[False] in by_regime else REGIMES[True]
    summary = by_regime.get(regime, {})
    if not summary:
        ax.text(0.5, 0.5, "FGM part not run", ha="center")
        ax.axis("off")
        return
    eps = result["config"]["bench"]["attack_epsilons"]
    for i, (method, cell) in enumerate(summary.items()):
        for kind, style in (("fgm", "-"), ("fgm_fraud_only", "--")):
            ys = [cell["clean"]] + [cell[f"{kind}@{e:g}"] for e in eps]
            ax.plot([0.0, *eps], ys, style, color=f"C{i}", marker="o",
                    label=f"{method}: {kind.replace('_', ' ')}")
    ax.set_xlabel("attack radius ε (std units, L2 per row)")
    ax.set_title(f"fraud AUC-PR on the next window under attack ({regime})", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _plot_forgetting_bars(ax: Any, result: dict[str, Any], metrics: list[str]) -> None:
    agg = aggregate(result)
    methods = list(agg)
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        values = [agg[m][metric]["forgetting_final"] for m in methods]
        ax.bar(np.arange(len(methods)) + i * width, values, width, label=metric)
    ax.set_xticks(np.arange(len(methods)) + width * (len(metrics) - 1) / 2)
    ax.set_xticklabels(methods, rotation=15, fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title("mean forgetting after the last update (lower = less)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
