"""Train the multi-task model on one window and evaluate it on the next (single process).

    python -m training.train --source synthetic
    python -m training.train --source online_retail --path ../shared/data/online_retail \
        --freq week --train-windows 2
    python -m training.train --source ulb --path ../shared/data/ulb_creditcard --freq hour

Prints next-window metrics for both tasks next to the popularity and
repeat-then-popular baselines on exactly the same users, and optionally writes them
as JSON (``--metrics-out``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.cli import (
    ConfigError,
    dataclass_from_args,
    require,
    setup_logging,
)
from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.source_config import SourceConfig, SourceError
from training.data.synthetic_config import SyntheticShopConfig
from training.model.config import ModelConfig
from training.stage_args import training_configs, training_parser

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig:
    """Which data to train on and which window to evaluate."""

    source: SourceConfig = field(default_factory=SourceConfig)
    eval_window: int = field(default=-1, metadata={
        "help": "position of the evaluated window in time order (-1: the last)"})
    train_windows: int = field(default=1, metadata={
        "help": "how many windows just before the evaluated one are trained on"})
    metrics_out: str | None = field(default=None, metadata={
        "help": "write the metrics as JSON to this file"})

    def __post_init__(self) -> None:
        require(self.train_windows >= 1, "train_windows", "must be >= 1")


def pick_windows(windows: Sequence[WindowData], job: JobConfig
                 ) -> tuple[list[WindowData], WindowData]:
    n = len(windows)
    pos = job.eval_window if job.eval_window >= 0 else n + job.eval_window
    if not 1 <= pos < n:
        raise ConfigError(f"eval_window: position {job.eval_window} leaves no earlier window "
                          f"to train on ({n} windows: {[w.window_id for w in windows]})")
    return list(windows[max(0, pos - job.train_windows):pos]), windows[pos]


def run_job(job: JobConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
            synthetic: SyntheticShopConfig | None = None) -> dict[str, Any]:
    """Load → train on the chosen windows → evaluate the next → metrics dict."""
    # Imported here, not at the top: `--help` and a bad flag answer before torch loads.
    from training.data.sources import merge_windows
    from training.evaluation.evaluate import candidate_items, evaluate_fraud, evaluate_rec
    from training.features.history import PurchaseHistory
    from training.fit.loop import init_model, resolve_device, train_window

    started = time.perf_counter()
    windows = job.source.load(synthetic)
    train_parts, target = pick_windows(windows, job)
    train = merge_windows(train_parts)
    model = init_model(model_cfg, train)
    model.to(resolve_device(train_cfg.device))
    history = PurchaseHistory(model_cfg.history_len)
    stats = train_window(model, train, history, train_cfg)
    history = history.update(train.interactions)
    rec = evaluate_rec(model, history, train.interactions, target, k=train_cfg.eval_k) \
        if len(target.interactions) else {}
    fraud = evaluate_fraud(model, history, target)
    return {
        "source": job.source.name, "train_window": train.window_id, "eval_window": target.window_id,
        "train_rows": train.counts(), "eval_rows": target.counts(),
        "train": {"steps": stats.steps, "seconds": round(stats.seconds, 2),
                  "samples_per_s": round(stats.samples_per_s, 1),
                  "final_loss": stats.mean_loss()},
        "recommendation": rec, "fraud": fraud,
        "n_candidates": sum(len(part) for part in candidate_items(model, target)),
        "seconds": round(time.perf_counter() - started, 2),
    }


def format_report(result: dict[str, Any], k: int) -> str:
    lines = [f"trained on {result['train_window']} {result['train_rows']}",
             f"evaluated on {result['eval_window']} {result['eval_rows']}",
             f"training: {result['train']}"]
    rec = result["recommendation"]
    if rec:
        lines.append(f"recommendation (next window, k={k}):")
        lines.append(f"  {'method':<22}{'users':>7}{'recall':>9}{'ndcg':>9}{'hitrate':>9}"
                     f"   warm recall / cold recall")
        for method, m in rec.items():
            lines.append(
                f"  {method:<22}{int(m['all/n_users']):>7}{m[f'all/recall@{k}']:>9.4f}"
                f"{m[f'all/ndcg@{k}']:>9.4f}{m[f'all/hitrate@{k}']:>9.4f}"
                f"   {m[f'warm/recall@{k}']:.4f} / {m[f'cold/recall@{k}']:.4f}")
    fraud = result["fraud"]
    if fraud.get("n"):
        lines.append("fraud (next window): " + ", ".join(
            f"{key}={value:.4f}" if isinstance(value, float) and not math.isnan(value)
            else f"{key}={value}" for key, value in fraud.items()))
    lines.append(f"total seconds: {result['seconds']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = training_parser("python -m training.train", __doc__, JobConfig).parse_args(argv)
    setup_logging()
    try:
        job = dataclass_from_args(JobConfig, args)
        train_cfg, model_cfg, synthetic = training_configs(args)
        result = run_job(job, model_cfg, train_cfg, synthetic)
    except (ConfigError, SourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(result, train_cfg.eval_k))
    if job.metrics_out:
        Path(job.metrics_out).parent.mkdir(parents=True, exist_ok=True)
        Path(job.metrics_out).write_text(json.dumps(result, indent=2, default=float))
        print(f"metrics written to {job.metrics_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
