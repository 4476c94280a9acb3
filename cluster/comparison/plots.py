"""PNG plots of the pipeline report (matplotlib, Agg backend): the main metric per evaluated
window per task (with its bootstrap 95% band where the run has one), update wall seconds per
window, and mean forgetting per neural method.

    python -m cluster.pipeline --help    # no entry point; cluster.comparison.report calls it

:func:`expected_plots` decides which files exist, so :func:`cluster.comparison.report.check_report`
expects exactly what :func:`write_plots` draws.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cluster.comparison.report_data import (
    applies,
    dig,
    forgetting_detail,
    mean_forgetting,
    neural_methods,
    number,
    series,
    update_seconds,
)

logger = logging.getLogger(__name__)

Drawer = Callable[[Any, Mapping[str, Any]], None]
MAX_TICKS = 16
UPDATE_SECONDS = "update_seconds.png"
FORGETTING = "forgetting.png"
RELIABILITY = "fraud_reliability.png"


def expected_plots(result: Mapping[str, Any]) -> list[str]:
    """File names of the PNGs a report of ``result`` has: ``{task}_per_window.png`` per task
    some method applies to (when a window was evaluated), the update cost when any update was
    timed, and forgetting when any neural method has a forgetting evaluation."""
    names = []
    if result["evaluated_windows"]:
        names += [f"{task}_per_window.png" for task in result["tasks"]
                  if any(applies(result, m, task) for m in result["methods"])]
    if any(math.isfinite(s) for m in result["methods"] for s in update_seconds(result, m)):
        names.append(UPDATE_SECONDS)
    tasks = result["tasks"]
    if any(forgetting_detail(result, m, t) for m in neural_methods(result) for t in tasks):
        names.append(FORGETTING)
    if (result.get("fraud_intervals") or {}).get("calibration"):
        names.append(RELIABILITY)
    return names


def _window_ticks(ax: Any, windows: list[str]) -> None:
    # Label at most MAX_TICKS windows so a year of weeks stays readable.
    step = max(1, math.ceil(len(windows) / MAX_TICKS))
    ticks = list(range(0, len(windows), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([windows[i] for i in ticks], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("window")


def _legend(ax: Any) -> None:
    # Outside the axes: with seven methods an inside legend hides data points.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))


def _band(ax: Any, result: Mapping[str, Any], method: str, task: str, metric: str,
          color: str) -> None:
    """Shade the per-window 95% interval of ``metric`` where the rows carry one."""
    bounds = [dig(result["prequential"], w, method, task, "ci95", metric)
              for w in result["evaluated_windows"]]
    lo = [number(b[0]) if isinstance(b, list) and len(b) == 2 else math.nan for b in bounds]
    hi = [number(b[1]) if isinstance(b, list) and len(b) == 2 else math.nan for b in bounds]
    if any(math.isfinite(v) for v in lo):
        ax.fill_between(range(len(lo)), lo, hi, color=color, alpha=0.15, linewidth=0)


def _per_window(task: str) -> Drawer:
    def draw(ax: Any, result: Mapping[str, Any]) -> None:
        main = result["tasks"][task]
        windows = result["evaluated_windows"]
        for method in result["methods"]:
            if applies(result, method, task):
                (line,) = ax.plot(range(len(windows)), series(result, method, task, main),
                                  marker="o", label=method)
                _band(ax, result, method, task, main, line.get_color())
        _window_ticks(ax, windows)
        ax.set_ylabel(main)
        ax.set_title(f"{task}: {main} per window (model before it trained on the window)")
        _legend(ax)

    return draw


def _update_seconds(ax: Any, result: Mapping[str, Any]) -> None:
    windows = result["windows"]
    seen: list[float] = []
    for method in result["methods"]:
        secs = update_seconds(result, method)
        if any(math.isfinite(s) for s in secs):
            ax.plot(range(len(windows)), secs, marker="o", label=method)
            seen += [s for s in secs if math.isfinite(s)]
    # Baselines fit in milliseconds and retraining takes minutes: only a log axis shows both
    # (a 0 s update, e.g. of the frozen model, has no place on it and is left out).
    if any(s > 0 for s in seen):
        ax.set_yscale("log", nonpositive="mask")
    _window_ticks(ax, windows)
    ax.set_ylabel("update wall seconds")
    ax.set_title("Update cost per window")
    _legend(ax)


def _forgetting(ax: Any, result: Mapping[str, Any]) -> None:
    tasks = list(result["tasks"])
    methods = [m for m in neural_methods(result)
               if any(forgetting_detail(result, m, t) for t in tasks)]
    width = 0.8 / max(1, len(tasks))
    for k, task in enumerate(tasks):
        xs = [i + (k - (len(tasks) - 1) / 2) * width for i in range(len(methods))]
        means = [mean_forgetting(result, m, task)[0] for m in methods]
        ax.bar(xs, [v if math.isfinite(v) else 0.0 for v in means], width=width,
               label=f"{task} ({result['tasks'][task]})")
        for x, v in zip(xs, means):
            finite = math.isfinite(v)
            ax.annotate(f"{v:+.3f}" if finite else "not measured", (x, v if finite else 0.0),
                        ha="center", va="top" if finite and v < 0 else "bottom", fontsize=7)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, fontsize=8)
    ax.set_ylabel("mean drop (best earlier version - latest)")
    ax.set_title("Forgetting on earlier windows (positive = forgot)")
    _legend(ax)


def _reliability(ax: Any, result: Mapping[str, Any]) -> None:
    calibration = result["fraud_intervals"]["calibration"]
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--", label="perfectly calibrated")
    for method, row in calibration.items():
        bins = row["bins"]
        ax.plot([b["mean_prob"] for b in bins], [b["fraud_rate"] for b in bins], marker="o",
                label=f"{method} (ECE {row['ece']:.3f}, Brier {row['brier']:.4f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted fraud probability (10 equal-width bins)")
    ax.set_ylabel("observed fraud rate")
    ax.set_title("Fraud reliability, pooled over the evaluated windows")
    _legend(ax)


def _drawer(name: str) -> Drawer:
    if name == RELIABILITY:
        return _reliability
    if name == UPDATE_SECONDS:
        return _update_seconds
    if name == FORGETTING:
        return _forgetting
    return _per_window(name.removesuffix("_per_window.png"))


def write_plots(result: Mapping[str, Any], directory: Path) -> list[Path]:
    """Draw every plot of :func:`cluster.comparison.report.expected_plots` into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    paths = []
    for name in expected_plots(result):
        # A bare Figure (no pyplot) keeps no global state, so nothing needs closing.
        fig = Figure(figsize=(9, 5), layout="constrained")
        _drawer(name)(fig.subplots(), result)
        path = directory / name
        fig.savefig(path, dpi=100)
        paths.append(path)
    logger.info("wrote %d plots to %s", len(paths), directory)
    return paths
