"""What the report's pooled fraud intervals cost over a long run: pooled at every window
(as before) or once when the run ends (now).

    python benchmarks/report_pooling.py [--windows 24 --rows 4000]

The pipeline saves each evaluated window's per-transaction fraud scores and sets that
window's own intervals (``record_fraud_intervals``); the pooled intervals resample every
transaction of every evaluated window :data:`~cluster.comparison.fraud_intervals.N_BOOT`
times per method. Recomputed after every window, a run's cost grows with the square of its
windows; the full ULB data (48 hourly windows of ~6,000 transactions) is where that shows.

Protocol: ULB-sized synthetic windows (``--rows`` transactions, 0.17% frauds, five fraud
methods as in the pipeline: ours, the no-replay and retrain arms, the frozen model, HGB),
a local store. For each window t, time ``record_fraud_intervals`` (both ways), and the
pooling over windows ``<= t`` (the old way, every window); the new way pools once at the
end, the same call as the old way's last. Printed and written to
``benchmarks/results/report_pooling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cluster.comparison.fraud_intervals import pool_fraud_intervals, record_fraud_intervals
from training.store import LocalStore

METHODS = ("incremental", "incremental_no_replay", "full_retrain", "frozen",
           "hist_gradient_boosting")
FRAUD_RATE = 0.0017  # ULB: 492 frauds in 284,807 transactions


def window_scores(rng: np.random.Generator, rows: int) -> dict[str, tuple[np.ndarray,
                                                                          np.ndarray]]:
    labels = rng.random(rows) < FRAUD_RATE
    labels[0] = True  # every window has a fraud (a quiet one would only be cheaper)
    return {m: (labels, 1.0 / (1.0 + np.exp(-(2.0 * labels + rng.normal(0, 1, rows)))))
            for m in METHODS}


def measure(windows: int, rows: int, seed: int = 0) -> dict[str, Any]:
    load_start = os.getloadavg()
    rng = np.random.default_rng(seed)
    ids = [f"w{t:03d}" for t in range(windows)]
    result: dict[str, Any] = {"evaluated_windows": ids}
    record_s, pool_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store")
        for wid in ids:
            began = time.perf_counter()
            record_fraud_intervals(result, store, wid, window_scores(rng, rows))
            record_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            pool_fraud_intervals(result, store)  # the old way: pooled after every window
            pool_s.append(time.perf_counter() - began)
    every = sum(record_s) + sum(pool_s)
    once = sum(record_s) + pool_s[-1]
    return {"windows": windows, "rows_per_window": rows, "methods": len(METHODS),
            "record_s_mean": float(np.mean(record_s)), "pool_s_first": pool_s[0],
            "pool_s_last": pool_s[-1], "total_s_pooled_every_window": every,
            "total_s_pooled_once": once, "ratio_once_over_every": once / every,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()}


def markdown(row: dict[str, Any]) -> str:
    return "\n".join([
        "# Pooled fraud intervals: every window vs once at the end", "",
        f"{row['windows']} windows x {row['rows_per_window']} transactions, "
        f"{row['methods']} fraud methods, one run (load average "
        f"{row['loadavg_start'][0]:.1f} at the start, {row['loadavg_end'][0]:.1f} at the end).",
        "",
        "| | seconds |", "|---|---|",
        f"| record a window's scores and own intervals (mean) | {row['record_s_mean']:.2f} |",
        f"| pool over the first window | {row['pool_s_first']:.2f} |",
        f"| pool over all {row['windows']} windows | {row['pool_s_last']:.2f} |",
        f"| whole run, pooled after every window (before) "
        f"| {row['total_s_pooled_every_window']:.1f} |",
        f"| whole run, pooled once at the end (now) | {row['total_s_pooled_once']:.1f} |",
        f"| now / before | {row['ratio_once_over_every']:.3f} |", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    row = measure(args.windows, args.rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report_pooling.json").write_text(json.dumps(row, indent=2) + "\n")
    text = markdown(row)
    (out / "report_pooling.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
