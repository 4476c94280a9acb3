"""The continual-learning loop itself: every window, test-then-train, every method.

For window ``t`` (oldest first): score every method's current model on it (prequential),
then update every method on it (ours: ``run_incremental`` with gate and publish), re-score
the neural methods on the windows so far (forgetting), and optionally run a sweep. The
results dict (the report's ``metrics.json``) is saved to the store after every step, so a
rerun on the same store resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cluster.comparison.arms import NEURAL_METHODS, OURS, Arm, build_arms
from cluster.comparison.evaluation import (
    FRAUD_BASELINE,
    FraudRow,
    GradientBoostingFraud,
    WindowContext,
    baseline_rec,
    build_contexts,
    evaluate_models,
    forgetting_row,
    has_fraud,
    has_rec,
)
from cluster.comparison.fraud_intervals import (
    pool_fraud_intervals,
    realised_review,
    record_fraud_intervals,
    transaction_cards,
)
from cluster.investigations import investigate
from cluster.pipeline_config import PipelineConfig
from training.cli import ConfigError
from training.config import TrainConfig
from training.data.labels import known_at
from training.data.schema import WindowData
from training.data.sources import load_windows, merge_windows
from training.data.synthetic import SyntheticShopConfig
from training.data.windows import list_windows, read_window, rewrite_window, write_window
from training.evaluation.evaluate import fraud_labels_scores
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig
from training.store import CheckpointStore
from training.update.run import json_safe

logger = logging.getLogger(__name__)

STATE = "pipeline"
LABELS = {
    "incremental": "incremental (replay+distill), ours",
    "incremental_no_replay": "incremental, no replay/distill",
    "full_retrain": "full retrain on all windows so far, gated like ours",
    "frozen": "frozen first model",
    "popularity": "popularity of the previous window",
    "repeat_then_popular": "repeat-then-popular",
    "hist_gradient_boosting": "HistGradientBoosting (l2=1.0)",
}


class PipelineStateError(RuntimeError):
    """The store holds a pipeline run over other data; the message names the setting."""


# Synthetic settings added after runs were stored, and the value at which they change no
# data: left out of the key there, so that a stored run over the same data still resumes.
OPT_IN_SHOP_SETTINGS = {"chargeback_days": 0.0}


def source_key(inc: IncrementalConfig, synthetic: SyntheticShopConfig | None) -> str:
    shop = None
    if inc.source.name == "synthetic" and synthetic:
        shop = {k: v for k, v in dataclasses.asdict(synthetic).items()
                if OPT_IN_SHOP_SETTINGS.get(k, object()) != v}
    ident = {"source": inc.source.name, "path": inc.source.path, "freq": inc.source.freq,
             "synthetic": shop}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def materialize(cfg: PipelineConfig, inc: IncrementalConfig,
                synthetic: SyntheticShopConfig | None) -> tuple[Path, list[WindowData], str]:
    """The source as a folder of windows (what every update reads), oldest first, and the
    windows' freq."""
    if inc.source.name == "windows" and cfg.investigated_share:
        # Investigations write label arrival times into the windows: into a copy, never
        # into the user's folder.
        folder = Path(cfg.work_dir) / f"windows-copy-{source_key(inc, synthetic)}"
        if not folder.is_dir():
            shutil.copytree(str(inc.source.path), folder)
        inc = inc.with_settings(path=str(folder))
    if inc.source.name == "windows":
        folder = Path(str(inc.source.path))
        # The pipeline evaluates every window, so it holds them all (an update alone does not).
        stored = load_windows("windows", str(folder))
        windows, freq = list(stored), str(stored.freq)
    else:
        folder = Path(cfg.work_dir) / f"windows-{inc.source.name}-{source_key(inc, synthetic)}"
        windows = list(inc.source.load(synthetic))
        freq = synthetic.freq if inc.source.name == "synthetic" and synthetic else inc.source.freq
        freq = str(freq)
        done = set(list_windows(folder))
        for window in windows:
            if window.window_id not in done:
                write_window(folder, window, freq, source=inc.source.name)  # type: ignore[arg-type]
        windows = [read_window(folder, w.window_id) for w in windows]
    if cfg.max_windows:
        windows = windows[:cfg.max_windows]
    if len(windows) < 2:
        raise PipelineStateError(f"source: {inc.source.name} has {len(windows)} window(s); the "
                                 "pipeline needs at least 2 (train on one, test on the next)")
    return folder, windows, freq


def tasks_of(windows: list[WindowData], k: int) -> dict[str, str]:
    tasks = {}
    if any(has_rec(w) for w in windows):
        tasks["rec"] = f"ndcg@{k}"
    if any(has_fraud(w) for w in windows):
        tasks["fraud"] = "auc_pr"
    return tasks


def new_result(cfg: PipelineConfig, inc: IncrementalConfig, windows: list[WindowData],
               tasks: dict[str, str], key: str, settings: dict[str, Any]) -> dict[str, Any]:
    applies = {"popularity": ["rec"], "repeat_then_popular": ["rec"],
               "hist_gradient_boosting": ["fraud"]}
    methods = {}
    for name in (OURS, *[m for m in cfg.methods if m != OURS]):
        kind = "neural" if name in NEURAL_METHODS else "baseline"
        on = [t for t in applies.get(name, ["rec", "fraud"]) if t in tasks]
        if on:
            methods[name] = {"label": LABELS[name], "kind": kind, "tasks": on}
    ids = [w.window_id for w in windows]
    return {"schema": 1, "created_at": datetime.now(timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "source": {"name": inc.source.name, "path": inc.source.path,
                       "freq": inc.source.freq, "key": key},
            "settings": settings, "windows": ids, "evaluated_windows": ids[1:],
            "tasks": tasks, "methods": methods, "prequential": {}, "updates": {},
            "forgetting": {m: {} for m, d in methods.items() if d["kind"] == "neural"},
            "sweeps": {}}


def load_state(store: CheckpointStore, fresh: dict[str, Any]) -> dict[str, Any]:
    """The saved run to resume, or ``fresh``; refuses a store that ran on other data."""
    saved = store.get_config(STATE)
    if not saved:
        return fresh
    if saved.get("source", {}).get("key") != fresh["source"]["key"]:
        raise PipelineStateError(
            f"store: {store.uri} holds a pipeline run over {saved.get('source')}, not "
            f"{fresh['source']}; use another --store")
    if saved["windows"] != fresh["windows"][:len(saved["windows"])] or \
            saved["methods"] != fresh["methods"]:
        raise PipelineStateError(f"store: {store.uri} holds a run with other windows or "
                                 "methods (--max-windows/--methods changed); use another --store")
    logger.info("resuming the pipeline run saved in %s", store.uri)
    # JSON round trips may reorder keys; the methods' order is the report's order.
    return {**saved, "windows": fresh["windows"], "methods": fresh["methods"],
            "evaluated_windows": fresh["evaluated_windows"]}


class Pipeline:
    """One run over the windows; ``run()`` returns the results dict."""

    def __init__(self, cfg: PipelineConfig, inc: IncrementalConfig, train_cfg: TrainConfig,
                 model_cfg: ModelConfig, synthetic: SyntheticShopConfig | None,
                 explicit: frozenset[str] = frozenset()) -> None:
        self.cfg, self.train_cfg, self.model_cfg = cfg, train_cfg, model_cfg
        if cfg.investigated_share and not inc.continual.label_delay:
            raise ConfigError("investigated_share: needs --label-delay >= 1 (at 0 every "
                              "label arrives at once)")
        self.folder, self.windows, self.freq = materialize(cfg, inc, synthetic)
        folder = self.folder
        self.inc = inc.with_settings(source="windows", path=str(folder))
        arms_trainer = inc.scaling.trainer if cfg.arms_trainer == "same" else cfg.arms_trainer
        arms_inc = self.inc.with_settings(trainer=arms_trainer,
                                          gate_tolerance=cfg.arms_gate_tolerance)
        self.arms: dict[str, Arm] = build_arms(cfg.methods, self.inc, arms_inc, train_cfg,
                                               model_cfg, explicit)
        self.store = self.arms[OURS].store
        self.k = train_cfg.eval_k
        self.tasks = tasks_of(self.windows, self.k)
        self.contexts: list[WindowContext] = build_contexts(self.windows,
                                                            model_cfg.history_len)
        settings = {"pipeline": dataclasses.asdict(cfg), "incremental": inc.public_dict(),
                    "arms_trainer": arms_trainer, "train": dataclasses.asdict(train_cfg),
                    "model": dataclasses.asdict(model_cfg)}
        fresh = new_result(cfg, inc, self.windows, self.tasks, source_key(inc, synthetic),
                           settings)
        self.result = load_state(self.store, fresh)

    def save(self) -> None:
        self.store.put_config(STATE, json_safe(self.result))

    def run(self) -> dict[str, Any]:
        for t in tqdm(range(len(self.windows)), desc="pipeline windows", unit="window"):
            wid = self.windows[t].window_id
            if t > 0 and wid not in self.result["prequential"]:
                self.result["prequential"][wid] = self.evaluate(t)
                self.save()
            if t > 0 and self.cfg.investigated_share:
                self.investigate(t)
            self.update(t)
            if self.cfg.forgetting:
                self.forget(t)
            self.maybe_sweep(t)
        self.pool_intervals()
        return self.result

    def pool_intervals(self) -> None:
        """The pooled rec and fraud intervals over every evaluated window, once per run (each
        window's own intervals were set when it was evaluated)."""
        from cluster.comparison.intervals import pool_rec_intervals

        pool_rec_intervals(self.result, self.store)
        pool_fraud_intervals(self.result, self.store)
        self.save()

    def record_realised_fpr(self, window: str, labels: np.ndarray, scores: np.ndarray) -> None:
        """How ours' live review threshold (set on its held-out tail for an FPR or an alert
        rate: the version's ``fraud_thresholds.target``) does on this window's transactions:
        the realised FPR, alert rate and the alerts it raises."""
        latest = self.store.latest()
        if latest is None or not len(labels) or labels.all():
            return
        thresholds = self.store.read_meta(latest.version).get("fraud_thresholds") or {}
        row = realised_review(thresholds, labels, scores)
        if row is not None:
            self.result.setdefault("realised_fpr", {})[window] = row

    def evaluate(self, t: int) -> dict[str, dict[str, Any]]:
        """Every method's current model on window ``t``, before anything trains on it."""
        ctx, methods = self.contexts[t], self.result["methods"]
        models = {name: arm.model() for name, arm in self.arms.items() if name in methods}
        out: dict[str, dict[str, Any]] = evaluate_models(
            {n: m for n, m in models.items() if m is not None}, ctx, self.k,
            tuple(self.tasks))
        previous = self.windows[t - 1].window_id
        costs = self.result["updates"].setdefault(previous, {})
        if "rec" in self.tasks:
            for name, (metrics, seconds) in baseline_rec(ctx, self.k).items():
                if name in methods:
                    out[name] = {"rec": metrics}
                    costs[name] = {"wall_s": seconds}
        if FRAUD_BASELINE in methods:
            hgb = GradientBoostingFraud(self.train_cfg.seed)
            # Fitted on the labels that had arrived when window t began (--label-delay).
            # The same arrived labels as ours' update had (early ones in a tail wait).
            seen = merge_windows(known_at(self.windows[:t], self.inc.continual.label_delay,
                                          self.freq, tail_frac=self.inc.continual.holdout_frac))
            costs[FRAUD_BASELINE] = {"wall_s": hgb.fit(seen.transactions,
                                                       seen.fraud_features)}
            out[FRAUD_BASELINE] = {"fraud": hgb.evaluate(ctx.window)}
        if "rec" in self.tasks:
            # Per-user values (the same users for every method) give paired intervals; the
            # results keep only the intervals. (Import here: only this method needs it.)
            from cluster.comparison.intervals import record_rec_intervals

            record_rec_intervals(self.result, self.store, ctx.window.window_id, out, self.k)
        scored = {m: (row["fraud"].labels, row["fraud"].scores) for m, row in out.items()
                  if isinstance(row.get("fraud"), FraudRow)}
        if OURS in scored:
            self.record_realised_fpr(ctx.window.window_id, *scored[OURS])
        if scored:
            record_fraud_intervals(self.result, self.store, ctx.window.window_id, scored,
                                   transaction_cards(ctx.window.transactions))
            for method in scored:
                out[method]["fraud"] = dict(out[method]["fraud"])
        logger.info("window %s prequential: %s", ctx.window.window_id, _brief(out, self.tasks))
        return out

    def investigate(self, t: int) -> None:
        """The analyst queue of window ``t`` (``cluster.investigations``): ours' live model
        ranks it, the top share's labels arrive now; written into the window's folder
        before any method updates on it. Once per window (a resumed run keeps it)."""
        wid = self.windows[t].window_id
        done = self.result.setdefault("investigated", {})
        model = self.arms[OURS].model()
        if wid in done or model is None or "fraud" not in self.tasks:
            return
        labels, scores = fraud_labels_scores(model, self.contexts[t].history, self.windows[t])
        marked, done[wid] = investigate(self.windows[t], labels, scores,
                                        self.cfg.investigated_share)
        rewrite_window(self.folder, marked)
        self.windows[t] = read_window(self.folder, wid)
        logger.info("window %s: %d investigated alerts, %d of %d frauds confirmed at once",
                    wid, done[wid]["investigated"], done[wid]["frauds_confirmed"],
                    done[wid]["frauds"])
        self.save()

    def update(self, t: int) -> None:
        wid = self.windows[t].window_id
        done = self.result["updates"].setdefault(wid, {})
        for name, arm in self.arms.items():
            if name in done:
                continue
            logger.info("window %s: updating %s", wid, name)
            done[name] = arm.update(self.windows, t)
            self.save()

    def forget(self, t: int) -> None:
        wid = self.windows[t].window_id
        for name, rows in self.result["forgetting"].items():
            model = self.arms[name].model() if name in self.arms else None
            if wid in rows or model is None:
                continue
            rows[wid] = forgetting_row(model, self.contexts[:t + 1], self.k, self.tasks)
        self.save()

    def maybe_sweep(self, t: int) -> None:
        """Every ``sweep_every`` windows, tune on data already seen: trials start from the
        version before window t-1, train on t-1 and are scored on t (never on a window
        the report has not scored yet); the best config feeds the updates from t+1."""
        every = self.cfg.sweep_every
        if not every or t < 1 or (t + 1) % every or t + 1 >= len(self.windows):
            return
        wid = self.windows[t].window_id
        if wid in self.result["sweeps"]:
            return
        from tuning.config import SweepConfig
        from tuning.run import run_sweep
        from tuning.space import SearchSpace

        previous = self.windows[t - 1].window_id
        start = self.result["updates"][previous][OURS].get("parent")
        began = time.perf_counter()
        sweep = run_sweep(SweepConfig(num_samples=self.cfg.sweep_samples,
                                      name=f"pipeline-{wid}"), SearchSpace(),
                          dataclasses.replace(self.inc, window=previous), self.train_cfg,
                          self.model_cfg, None, start_version=start)
        self.result["sweeps"][wid] = {"seconds": time.perf_counter() - began,
                                      "sweep_id": sweep.sweep_id, "start_version": start,
                                      "trained_on": previous, "scored_on": wid,
                                      "best_config": sweep.best_config,
                                      "written_to": sweep.best_written_to}
        self.save()

    def last_published(self) -> str:
        latest = self.store.latest()
        if latest is None:
            raise PipelineStateError(f"store: {self.store.uri} has no published version")
        return latest.version


def _brief(out: dict[str, dict[str, Any]], tasks: dict[str, str]) -> str:
    parts = []
    for method, row in out.items():
        values = [f"{task}={row[task].get(metric, float('nan')):.4f}"
                  for task, metric in tasks.items() if task in row
                  and row[task].get(metric) is not None]
        parts.append(f"{method}[{' '.join(values)}]")
    return " ".join(parts)
