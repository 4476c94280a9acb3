"""python benchmarks/synthetic_throughput.py [--n-windows 20 --interactions-per-window 50000 ...]

Throughput of the synthetic shop generator (``make bench``): streams every window of a
config with >= 1M interactions through :func:`training.data.synthetic.iter_windows`, frames
included (nothing is written), and reports rows/s and interactions/min. The target is
>= 1M interactions/min. Results go to ``benchmarks/results/synthetic_throughput.json``.

Every :class:`~training.data.synthetic.SyntheticShopConfig` setting is a flag; this
benchmark's defaults differ from the generator's only in ``--n-windows`` (20) and
``--interactions-per-window`` (50000).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.cli import ConfigError, add_dataclass_args, dataclass_from_args, setup_logging
from training.data.synthetic import SyntheticShopConfig, iter_windows

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_throughput.json"
TARGET_PER_MIN = 1_000_000
BENCH_DEFAULTS = SyntheticShopConfig(n_windows=20, interactions_per_window=50_000)


def run(cfg: SyntheticShopConfig) -> dict[str, Any]:
    """Generate every window of ``cfg`` and time it."""
    counts = {"items": 0, "interactions": 0, "transactions": 0}
    started = time.perf_counter()
    for window in tqdm(iter_windows(cfg), total=cfg.n_windows, desc="windows", unit="window"):
        for name, n in window.counts().items():
            counts[name] += n
    seconds = time.perf_counter() - started
    rows = sum(counts.values())
    per_min = counts["interactions"] / seconds * 60
    return {
        "benchmark": "synthetic_throughput",
        "config": dataclasses.asdict(cfg),
        "seconds": round(seconds, 3),
        "rows": counts,
        "rows_per_s": round(rows / seconds, 1),
        "interactions_per_s": round(counts["interactions"] / seconds, 1),
        "interactions_per_min": round(per_min, 1),
        "target_interactions_per_min": TARGET_PER_MIN,
        "meets_target": per_min >= TARGET_PER_MIN,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/synthetic_throughput.py",
                                     description="Time the synthetic shop generator.")
    parser.add_argument("--json-out", type=Path, default=RESULTS,
                        help=f"where the JSON result goes (default: {RESULTS})")
    add_dataclass_args(parser, SyntheticShopConfig)
    args = parser.parse_args(argv)
    try:
        cfg = dataclass_from_args(SyntheticShopConfig, args, base=BENCH_DEFAULTS)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging()
    result = run(cfg)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['rows']['interactions']:,} interactions "
          f"({sum(result['rows'].values()):,} rows) in {result['seconds']:.2f} s: "
          f"{result['rows_per_s']:,.0f} rows/s, "
          f"{result['interactions_per_min']:,.0f} interactions/min "
          f"(target {TARGET_PER_MIN:,}/min: {'met' if result['meets_target'] else 'MISSED'})")
    logger.info("wrote %s", args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
