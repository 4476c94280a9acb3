"""A dress rehearsal of `make report-real` at the size of the full public data sets.

    python benchmarks/rehearsal.py [--runs online_retail-month ulb-hour online_retail-week]

The shipped slices are the first 3 months of UCI Online Retail and the first 6 h of the ULB
fraud data; the reports are judged on later months of the same data sets, a year and two
days long. A run that only ever saw 3 months can fail at 12 (an update that first crosses
``ray_min_steps`` and moves to the Ray trainer, a full retrain over many windows, a folder of
several files). So this script *tiles* the shipped slices forward in time to the full data
sets' shapes — Online Retail's 68 days copied 4 times, 91 days (13 weeks) apart, to a year of
daily CSVs with shifted invoice numbers; ULB's 6 h copied 8 times, 6 h apart, each row three
times 0.25 s apart (~296k rows, the full file has 285k) — and runs the main job on them with
`make report-real`'s settings, one process per run.

What it checks is that each run completes and what it costs: exit status, wall time, peak
RSS of the job (the largest process in its tree that exited), windows evaluated, and each
arm's mean update seconds per window. **Its quality numbers mean nothing**: tiled data repeats
the same baskets and transactions, so repeat-aware methods and trees that memorise rows
look perfect. Never tune anything to them. Printed and written to
``benchmarks/results/rehearsal.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared" / "data"
# `make report-real`'s REAL_ARGS.
REAL_ARGS = ("--model-finetune-layers", "0", "--num-workers", "2", "--once")
RUNS = ("online_retail-month", "ulb-hour", "online_retail-week")
RETAIL_LAST_DAY = dt.date(2011, 12, 9)  # the published data set's last day
logger = logging.getLogger("rehearsal")


def tile_retail(src: Path, dest: Path, copies: int = 4, days_apart: int = 91) -> int:
    """Copy ``src``'s daily CSVs ``copies`` times, ``days_apart`` days apart (13 weeks:
    weekdays kept), up to the published last day; invoice numbers move by 100,000 a copy.
    Returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    for k in range(copies):
        shift = dt.timedelta(days=days_apart * k)
        for file in sorted(src.glob("*.csv")):
            day = dt.date.fromisoformat(file.stem) + shift
            if day > RETAIL_LAST_DAY:
                continue
            with file.open(newline="") as fin, (dest / f"{day}.csv").open("w", newline="") as out:
                rows, writer = csv.reader(fin), csv.writer(out)
                writer.writerow(next(rows))
                for row in rows:
                    cancel = row[0].startswith("C")
                    number = int(row[0][1:] if cancel else row[0]) + 100_000 * k
                    row[0] = ("C" if cancel else "") + str(number)
                    stamp = dt.datetime.fromisoformat(row[4]) + shift
                    row[4] = stamp.strftime("%Y-%m-%d %H:%M:%S")
                    writer.writerow(row)
            written += 1
    return written


def tile_ulb(src: Path, dest: Path, copies: int = 8, repeats: int = 3,
             seconds_apart: int = 21_600) -> int:
    """``src``'s rows ``copies`` times, ``seconds_apart`` apart in ``Time``, each row
    ``repeats`` times 0.25 s apart, as one CSV in ``dest``. Returns the data rows."""
    dest.mkdir(parents=True, exist_ok=True)
    header, *lines = src.read_text().splitlines()
    with (dest / "creditcard_tiled.csv").open("w") as out:
        out.write(header + "\n")
        for k in range(copies):
            for rep in range(repeats):
                for line in lines:
                    seconds, rest = line.split(",", 1)
                    out.write(f"{float(seconds) + seconds_apart * k + 0.25 * rep:g},{rest}\n")
    return copies * repeats * len(lines)


def run_job(name: str, data: Path, out: Path, timeout_s: int) -> dict[str, Any]:
    """The main job on ``data`` as `make report-real` runs it; its cost and outcome."""
    source, freq = name.split("-")
    run_dir = out / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cluster.pipeline", "--source", source, "--path", str(data),
           "--freq", freq, "--store", str(run_dir / "store"),
           "--report-dir", str(run_dir / "report"), "--work-dir", str(run_dir / "work"),
           "--storage-path", str(run_dir / "ray"), *REAL_ARGS]
    began = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout_s, check=False).returncode
    wall = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result: dict[str, Any] = {"run": name, "exit": code, "wall_s": round(wall, 1),
                              "peak_rss_mib_so_far": round(peak)}
    metrics = run_dir / "report" / "metrics.json"
    if code == 0 and metrics.is_file():
        result.update(summarise(json.loads(metrics.read_text())))
    return result


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """Windows, evaluated windows, and each neural arm's mean update wall and trainers."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for per_arm in metrics["updates"].values():
        for arm, update in per_arm.items():
            if isinstance(update, dict) and "wall_s" in update:
                arms.setdefault(arm, []).append(update)
    return {"windows": len(metrics["windows"]), "evaluated": len(metrics["evaluated_windows"]),
            "arms": {arm: {"mean_update_s": round(sum(u["wall_s"] for u in ups) / len(ups), 2),
                           "max_update_s": round(max(u["wall_s"] for u in ups), 2),
                           "trainers": sorted({str(u.get("trainer")) for u in ups})}
                     for arm, ups in arms.items()}}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| run | exit | windows (evaluated) | wall min | peak RSS MiB (so far) | "
             "ours s/update (max) | full retrain s/update (max) | full retrain trainers |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        arms = r.get("arms", {})
        ours, full = arms.get("incremental", {}), arms.get("full_retrain", {})
        lines.append(
            f"| {r['run']} | {r['exit']} | {r.get('windows', '-')} ({r.get('evaluated', '-')}) "
            f"| {r['wall_s'] / 60:.1f} | {r['peak_rss_mib_so_far']} | "
            f"{ours.get('mean_update_s', '-')} ({ours.get('max_update_s', '-')}) | "
            f"{full.get('mean_update_s', '-')} ({full.get('max_update_s', '-')}) | "
            f"{', '.join(full.get('trainers', []))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help="the shipped slices (../shared/data)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the tiled data and runs go (default: a temporary folder, "
                             "removed at the end)")
    parser.add_argument("--timeout-s", type=int, default=3 * 3600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
        os.environ.setdefault(key, value)
    work = args.work or Path(tempfile.mkdtemp(prefix="shopstream-rehearsal-"))
    data = {"online_retail": work / "online_retail", "ulb": work / "ulb"}
    logger.info("tiled: %d retail days, %d ULB rows",
                tile_retail(args.shared / "online_retail", data["online_retail"]),
                tile_ulb(args.shared / "ulb_creditcard" / "creditcard_first_6h.csv",
                         data["ulb"]))
    load = os.getloadavg()[0]
    results = []
    for name in args.runs:
        results.append(run_job(name, data[name.split("-")[0]], work / "runs", args.timeout_s))
        logger.info("%s", results[-1])
    RESULTS.mkdir(exist_ok=True)
    record = {"load_start": load, "load_end": os.getloadavg()[0], "results": results}
    (RESULTS / "rehearsal.json").write_text(json.dumps(record, indent=2))
    (RESULTS / "rehearsal.md").write_text(markdown(results))
    print(markdown(results))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
