"""One Ray Tune sweep, end to end: what ``python -m tuning.sweep`` runs (trials, table,
Pareto front, plot, summary, ``configs/best.json``).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from training.cli import ConfigError
from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.split import choose_window
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import BEST_CONFIG, IncrementalConfig
from training.model import ModelConfig
from training.store import CheckpointStore
from tuning.config import SweepConfig
from tuning.report import (
    TrialRow,
    best_config_doc,
    best_row,
    finalists,
    format_table,
    pareto_front,
    plot_sweep,
)
from tuning.snapshot import snapshot_latest, snapshot_version
from tuning.space import SearchSpace
from tuning.tuner import build_tuner, rows_from_grid

logger = logging.getLogger(__name__)

# run_sweep's default start: the store's latest version.
LATEST = "latest"


@dataclass
class SweepResult:
    sweep_id: str
    experiment_path: str
    window: str
    validation_window: str
    rows: list[TrialRow]
    best: TrialRow
    best_config: dict[str, Any]
    pareto: list[TrialRow]
    table: str
    report_dir: Path
    plot_path: Path
    perturbations: int
    seconds: float
    best_written_to: str | None


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def is_remote(path: str) -> bool:
    return urlparse(path).scheme not in ("", "file")


def check_windows(store: CheckpointStore, inc: IncrementalConfig, sweep: SweepConfig,
                  synthetic: SyntheticShopConfig | None) -> tuple[WindowData, WindowData]:
    """(window to train, next window to score on); fails before any trial starts."""
    windows = inc.source.load(synthetic)
    latest = store.latest()
    after = latest.user_meta.get("window") if latest is not None else None
    window = choose_window(windows, inc.window, None if after is None else str(after))
    ids = list(windows.ids)
    pos = windows.position(window.window_id)
    if pos + 1 >= len(windows):
        raise ConfigError(f"window: {window.window_id} is the source's last window; a sweep "
                          f"scores trials on the next one (windows: {ids})")
    nxt = windows[pos + 1]
    if sweep.rec_weight > 0 and not len(nxt.interactions):
        raise ConfigError(f"rec_weight: the next window {nxt.window_id} has no interactions "
                          "to score recommendation on (set --rec-weight 0)")
    frauds = int(nxt.transactions["is_fraud"].dropna().astype(bool).sum()) \
        if len(nxt.transactions) else 0
    if sweep.fraud_weight > 0 and not frauds:
        raise ConfigError(f"fraud_weight: the next window {nxt.window_id} has no labelled "
                          "fraud to score AUC-PR on (set --fraud-weight 0)")
    return window, nxt


def _absolute(inc: IncrementalConfig) -> IncrementalConfig:
    """Local paths made absolute: trials run in their own working directories."""
    def fix(path: str | None) -> str | None:
        return path if path is None or is_remote(path) else str(Path(path).resolve())

    return inc.with_settings(path=fix(inc.source.path),
                             storage_path=fix(inc.scaling.storage_path) or "")


def run_sweep(sweep: SweepConfig, space: SearchSpace, inc: IncrementalConfig,
              train_cfg: TrainConfig, model_cfg: ModelConfig,
              synthetic: SyntheticShopConfig | None = None,
              start_version: str | None = LATEST) -> SweepResult:
    """Run the sweep on the connected Ray cluster, report it, write configs/best.json.

    Trials start from the store's ``latest`` or, given ``start_version``, from that
    version (None: from the pretrained encoder)."""
    began = time.perf_counter()
    sweep_id = sweep.name or new_sweep_id()
    store = inc.store.open()
    window, nxt = check_windows(store, inc, sweep, synthetic)
    logger.info("sweep %s: %d trials (%s, %s, %s backend) train %s, score on %s, space %s",
                sweep_id, sweep.num_samples, sweep.scheduler, sweep.search,
                sweep.trial_backend, window.window_id, nxt.window_id, space.to_json())
    start = snapshot_latest(store) if start_version == LATEST else \
        snapshot_version(store, start_version)
    tuner = build_tuner(sweep, space, _absolute(inc), train_cfg, model_cfg, synthetic,
                        start, sweep_id)
    with warnings.catch_warnings():
        # Actor reuse is off on purpose (tuning.tuner.build_tuner); PBT's advice to turn it
        # back on is not for this sweep.
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        grid = tuner.fit()
    rows = rows_from_grid(grid)
    pool = finalists(rows, sweep.max_epochs)
    best, front = best_row(pool, sweep.metric), pareto_front(pool)
    remote = is_remote(sweep.results_path)
    experiment = f"{sweep.results_path.rstrip('/')}/{sweep_id}" if remote \
        else grid.experiment_path
    report_dir = Path(sweep.report_dir) if sweep.report_dir else (
        Path("runs/tune-reports") / sweep_id if remote else Path(grid.experiment_path))
    info = {"sweep_id": sweep_id, "metric": sweep.metric, "mode": "max",
            "objective": _objective_info(sweep, train_cfg.eval_k),
            "window": window.window_id, "validation_window": nxt.window_id,
            "scheduler": sweep.scheduler, "search": sweep.search,
            "max_epochs": sweep.max_epochs, "results_path": experiment, "store": store.uri}
    doc = best_config_doc(best, rows, front, space.train_keys(), space.incremental_keys(), info)
    written = None
    if sweep.write_best:
        store.put_config(BEST_CONFIG, doc)
        written = f"{store.uri.rstrip('/')}/configs/{BEST_CONFIG}.json"
        logger.info("wrote %s (trial %s, %s=%.4f)", written, best.trial_id, sweep.metric,
                    best.value(sweep.metric))
    result = SweepResult(
        sweep_id=sweep_id, experiment_path=experiment, window=window.window_id,
        validation_window=nxt.window_id, rows=rows, best=best, best_config=doc,
        pareto=front, table=format_table(rows, sweep.metric, front, best),
        report_dir=report_dir,
        plot_path=plot_sweep(rows, sweep.metric, front, best, report_dir / "sweep.png"),
        perturbations=count_perturbations(grid), seconds=0.0, best_written_to=written)
    result.seconds = round(time.perf_counter() - began, 1)
    write_summary(result)
    return result


def _objective_info(sweep: SweepConfig, k: int) -> dict[str, Any]:
    return {"rec_weight": sweep.rec_weight, "fraud_weight": sweep.fraud_weight,
            "rec": f"next-window NDCG@{k}", "fraud": "next-window AUC-PR"}


def count_perturbations(grid: Any) -> int:
    """PBT exploit/explore steps, one line each in the experiment's ``pbt_global.txt``."""
    path = f"{grid.experiment_path.rstrip('/')}/pbt_global.txt"
    try:
        with grid.filesystem.open_input_stream(path) as stream:
            text = stream.read().decode("utf-8")
    except (FileNotFoundError, OSError):
        return 0
    return sum(1 for line in text.splitlines() if line.strip())


def write_summary(result: SweepResult) -> Path:
    path = result.report_dir / "sweep_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    doc = {"sweep_id": result.sweep_id, "experiment_path": result.experiment_path,
           "window": result.window, "validation_window": result.validation_window,
           "seconds": result.seconds, "perturbations": result.perturbations,
           "best_trial": result.best.trial_id, "best_config": result.best_config,
           "best_written_to": result.best_written_to,
           "trials": [{"trial_id": r.trial_id, "status": r.status, "epochs": r.epochs,
                       "params": r.params, "error": r.error, "history": [num(h) for h in
                                                                           r.history],
                       **{k: num(r.value(k)) for k in ("score", "rec_ndcg", "fraud_auc_pr")}}
                      for r in result.rows]}
    path.write_text(json.dumps(doc, indent=2, allow_nan=False))
    return path


def summary_line(result: SweepResult, metric: str) -> str:
    return (f"sweep={result.sweep_id} window={result.window} "
            f"validation={result.validation_window} trials={len(result.rows)} "
            f"best={result.best.trial_id} {metric}={result.best.value(metric):.4f} "
            f"pareto={[r.trial_id for r in result.pareto]} "
            f"perturbations={result.perturbations} best_config={result.best_written_to} "
            f"seconds={result.seconds}")
