"""A finished sweep read back: trial table, rec/fraud Pareto front, plot, best config.

Pure functions over :class:`TrialRow` (no Ray here), so they are unit-tested directly;
:mod:`tuning.sweep` builds the rows from Tune's ``ResultGrid``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from training.cli import ConfigError

TABLE_PARAM_WIDTH = 10
# Trial folders are "<trainable>_<trial id>_<index>_<params>_<date>"; the id is
# "5f0e2_00003" under random search and "1bedde5b" under a Searcher (Optuna).
TRIAL_ID = re.compile(r"^(?:loop_trial|ray_train_trial)_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})(?:_|$)")


class MetricNotReportedError(ConfigError):
    """No trial reported a finite value of the sweep's metric."""


@dataclass
class TrialRow:
    """One trial's last report (and, for the plot, its per-epoch scores)."""

    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, float]
    epochs: int = 0
    error: str | None = None
    history: list[float] = field(default_factory=list)
    # PBT: the values each epoch ran with, through the trial's lineage of exploits.
    schedule: list[dict[str, float]] = field(default_factory=list)

    def value(self, metric: str) -> float:
        value = self.metrics.get(metric, math.nan)
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def status(self) -> str:
        return "ERROR" if self.error else "OK"


def combined_score(rec: float, fraud: float, rec_weight: float, fraud_weight: float) -> float:
    """The sweep's objective rec_weight·rec + fraud_weight·fraud (NaN if a weighted task is
    unmeasured); a task with weight 0 cannot make it NaN."""
    terms = [w * v for w, v in ((rec_weight, rec), (fraud_weight, fraud)) if w > 0]
    return float(sum(terms))


def trial_id_of(path: str) -> str:
    """``5f0e2_00003`` from a trial folder ``loop_trial_5f0e2_00003_3_<params>_<date>``.

    Not ``metrics["trial_id"]``: after a PBT exploit a trial's last metrics can be the
    cloned trial's.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    match = TRIAL_ID.search(name)
    return match.group(1) if match else name


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def pareto_front(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """Trials no other trial beats on both rec NDCG and fraud AUC-PR (ties kept), by rec
    descending; trials missing either metric are left out."""
    points = [r for r in rows if _finite(r.value("rec_ndcg")) and _finite(r.value("fraud_auc_pr"))]

    def dominated(a: TrialRow) -> bool:
        ra, fa = a.value("rec_ndcg"), a.value("fraud_auc_pr")
        return any(b.value("rec_ndcg") >= ra and b.value("fraud_auc_pr") >= fa
                   and (b.value("rec_ndcg") > ra or b.value("fraud_auc_pr") > fa)
                   for b in points)

    front = [r for r in points if not dominated(r)]
    return sorted(front, key=lambda r: (-r.value("rec_ndcg"), -r.value("fraud_auc_pr")))


def finalists(rows: Sequence[TrialRow], max_epochs: int) -> list[TrialRow]:
    """The trials the best config and the front are chosen from: those that trained the
    whole ``max_epochs`` horizon (the epochs best.json asks for). A trial ASHA stopped early
    was scored at fewer epochs, part-way through its schedule, so its last score does not
    compare with theirs. All trials when none finished (e.g. every trial failed)."""
    full = [r for r in rows if r.error is None and r.epochs >= max_epochs]
    return full or list(rows)


def best_row(rows: Sequence[TrialRow], metric: str) -> TrialRow:
    """The trial with the highest last-reported ``metric``; raises if none reported it."""
    scored = [r for r in rows if _finite(r.value(metric))]
    if not scored:
        errors = sorted({r.error.splitlines()[0] for r in rows if r.error})[:3]
        raise MetricNotReportedError(
            f"metric: no trial reported a finite {metric!r} ({len(rows)} trials"
            + (f"; errors: {errors}" if errors else "") + ")")
    return max(scored, key=lambda r: r.value(metric))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[TrialRow], metric: str, front: Sequence[TrialRow],
                 best: TrialRow | None = None) -> str:
    """Plain-text table sorted by ``metric``; ``*`` marks the Pareto front, ``best`` the
    trial whose config goes to best.json."""
    on_front = {r.trial_id for r in front}
    params = sorted({k for r in rows for k in r.params})
    head = ["trial", "status", "epochs", *params, "rec_ndcg", "fraud_auc_pr", "score", "pareto",
            "best"]
    ordered = sorted(rows, key=lambda r: (not _finite(r.value(metric)),
                                          -r.value(metric) if _finite(r.value(metric)) else 0))
    body = [[r.trial_id, r.status, str(r.epochs),
             *[_cell(r.params.get(p, ""))[:TABLE_PARAM_WIDTH] for p in params],
             _cell(r.value("rec_ndcg")), _cell(r.value("fraud_auc_pr")), _cell(r.value("score")),
             "*" if r.trial_id in on_front else "", "best" if r is best else ""]
            for r in ordered]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_sweep(rows: Sequence[TrialRow], metric: str, front: Sequence[TrialRow],
               best: TrialRow, path: Path) -> Path:
    """PNG: left, ``metric`` per trial over epochs (where ASHA stopped a trial its line
    ends); right, rec NDCG vs fraud AUC-PR of every trial (hollow: stopped early), the
    Pareto ``front`` and the ``best`` trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for row in rows:
        if row.history:
            left.plot(range(1, len(row.history) + 1), row.history, marker="o", label=row.trial_id)
    left.set(xlabel="epoch", ylabel=metric, title=f"{metric} per trial (next window)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(r.history for r in rows) and len(rows) <= 12:
        left.legend(fontsize=7)
    pts = [r for r in rows if _finite(r.value("rec_ndcg")) and _finite(r.value("fraud_auc_pr"))]
    horizon = max((r.epochs for r in pts), default=0)
    for done, label in ((True, "trials (all epochs)"), (False, "stopped early")):
        part = [r for r in pts if (r.epochs >= horizon) == done]
        if part:
            right.scatter([r.value("rec_ndcg") for r in part],
                          [r.value("fraud_auc_pr") for r in part], label=label,
                          color="tab:gray" if done else "none", edgecolors="tab:gray")
    right.plot([r.value("rec_ndcg") for r in front], [r.value("fraud_auc_pr") for r in front],
               color="tab:red", marker="o", label="Pareto front (all epochs)")
    if _finite(best.value("rec_ndcg")) and _finite(best.value("fraud_auc_pr")):
        right.scatter([best.value("rec_ndcg")], [best.value("fraud_auc_pr")], marker="*", s=250,
                      color="gold", edgecolors="black", zorder=3, label=f"best {metric}")
    right.set(xlabel="rec NDCG@k", ylabel="fraud AUC-PR", title="rec vs fraud trade-off")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=100)
    return path


def _json_number(value: float) -> float | None:
    return value if _finite(value) else None


def best_config_doc(best: TrialRow, rows: Sequence[TrialRow], front: Sequence[TrialRow],
                    train_keys: Sequence[str], incremental_keys: Sequence[str],
                    info: dict[str, Any]) -> dict[str, Any]:
    """``configs/best.json``: what training.incremental overlays (``train_config``,
    ``incremental_config``) plus where it came from (``info``: sweep id, metric, window...)."""
    train = {k: best.params[k] for k in train_keys if k in best.params}
    train["epochs"] = info["max_epochs"]  # the horizon the schedules were tuned over
    incremental = {k: best.params[k] for k in incremental_keys if k in best.params}
    if any(best.schedule):  # PBT trials only (ASHA and random search record none)
        # PBT: the values the best lineage ran with, epoch by epoch, are the result; its
        # last ones alone would lose the schedule. The flat settings hold the first epoch's.
        train["epoch_schedule"] = best.schedule
        for key, value in best.schedule[0].items():
            (train if key in train_keys else incremental)[key] = value
    return {
        **info,
        "train_config": train,
        "incremental_config": incremental,
        "trial_id": best.trial_id,
        "value": _json_number(best.value(info["metric"])),
        "metrics": {k: _json_number(best.value(k)) for k in ("score", "rec_ndcg",
                                                             "fraud_auc_pr")},
        "num_trials": len(rows),
        "pareto_front": [{"trial_id": r.trial_id, "rec_ndcg": r.value("rec_ndcg"),
                          "fraud_auc_pr": r.value("fraud_auc_pr")} for r in front],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
