"""Memory the main job's per-window evaluation contexts hold, as the number of windows grows.

    python benchmarks/pipeline_contexts.py [--windows 12 25 49]

``cluster.pipeline`` builds one :class:`~cluster.comparison.evaluation.WindowContext` per
window when it starts, and keeps them all: the forgetting rows re-score every earlier window.
What a context holds must grow with its own window, not with everything before it, or a
year of weekly windows holds the square of its data. This script tiles the shipped Online
Retail slice to a year (``benchmarks/rehearsal.py``), splits it into weekly windows, builds
the contexts of the first N windows for each N, one process per N, and reports the bytes
they hold: Python's traced allocations (pandas and NumPy arrays included; exact) and the
process's RSS growth (what the machine sees; the allocator reuses freed pages, so noisier).
Printed and written to ``benchmarks/results/pipeline_contexts.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared" / "data"
logger = logging.getLogger("pipeline_contexts")


def rss_mib() -> int:
    """This process's resident set (Linux /proc)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def measure(data: Path, windows: int, history_len: int) -> dict[str, Any]:
    """Build the contexts of the first ``windows`` weekly windows of ``data``; what they hold."""
    from cluster.comparison.evaluation import build_contexts
    from training.data.sources import load_windows

    chosen = list(load_windows("online_retail", str(data), freq="week"))[:windows]
    gc.collect()
    tracemalloc.start()
    before, began = rss_mib(), time.perf_counter()
    contexts = build_contexts(chosen, history_len)
    gc.collect()
    traced = tracemalloc.get_traced_memory()
    return {"windows": len(contexts), "interactions": sum(len(w.interactions) for w in chosen),
            "traced_mib": round(traced[0] / 2**20, 1),
            "traced_peak_mib": round(traced[1] / 2**20, 1),
            "rss_growth_mib": rss_mib() - before,
            "history_rows": sum(len(c.history.profile.pairs) for c in contexts),
            "seconds": round(time.perf_counter() - began, 1)}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| windows | interactions | traced MiB (peak) | RSS growth MiB | "
             "history pairs held | build s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['windows']} | {r['interactions']} | {r['traced_mib']} "
              f"({r['traced_peak_mib']}) | {r['rss_growth_mib']} | {r['history_rows']} | "
              f"{r['seconds']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[12, 25, 49])
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help="the shipped slices (../shared/data)")
    parser.add_argument("--history-len", type=int, default=50)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.one is not None:  # a child: one measurement, printed as JSON
        print(json.dumps(measure(args.data, args.one, args.history_len)))
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rehearsal import tile_retail

    with tempfile.TemporaryDirectory(prefix="shopstream-contexts-") as tmp:
        tile_retail(args.shared / "online_retail", Path(tmp))
        rows = []
        for n in args.windows:
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--data", tmp,
                 "--history-len", str(args.history_len)], cwd=ROOT, check=True,
                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            logger.warning("%s", rows[-1])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_contexts.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / "pipeline_contexts.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
