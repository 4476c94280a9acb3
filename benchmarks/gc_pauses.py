"""python benchmarks/gc_pauses.py [--cases ulb-hour-delay1 online_retail-month] [--rounds 2]

What Python's garbage collector costs the main job, with the import-time heap frozen
(``training.heap``, the default) and without (``SHOPSTREAM_GC_FREEZE=0``). Each case runs
``python -m cluster.pipeline`` as the reports do (``--model-finetune-layers 0 --serve
false``), in a child process whose ``gc.callbacks`` time every collection; rounds alternate
the two modes, so drifting machine load hits both alike. Per case and mode:

* the collector's pauses: their total, the full (generation 2) collections and the longest
  (start-up included: the imports before the freeze collect a growing heap);
* a full collection's median pause and the objects it walks (the frozen ones are skipped);
* the job's wall time, and from its report the update cost the verdict quotes: ours /
  full retrain, mean wall seconds per update after the first version.

Results: ``benchmarks/results/gc_pauses.{json,md}``; recorded: ``benchmarks/recorded/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (the repository root on sys.path)
from recording import record_parts

from cluster.comparison.report_data import finite_mean, update_seconds
from training.heap import GC_FREEZE_ENV

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CASES: dict[str, list[str]] = {
    "ulb-hour-delay1": ["--source", "ulb", "--freq", "hour", "--label-delay", "1", "--path",
                        str(DATA / "ulb_creditcard" / "creditcard_first_6h.csv")],
    "online_retail-month": ["--source", "online_retail", "--freq", "month", "--once",
                            "--path", str(DATA / "online_retail")],
}
MODES = {"frozen": "1", "python default": "0"}


def child(out: str, argv: list[str]) -> int:
    """Run the pipeline in this process, timing every collection; write the figures."""
    pauses: list[tuple[int, float]] = []
    began: list[float] = []
    walked: list[tuple[int, int]] = []

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            pauses.append((info["generation"], time.perf_counter() - began.pop()))
            if info["generation"] == 2:
                walked.append((len(gc.get_objects(generation=2)), gc.get_freeze_count()))

    from cluster.pipeline import main

    gc.callbacks.append(timer)
    rc = main(argv)
    gc.callbacks.remove(timer)
    full = [s for generation, s in pauses if generation == 2]
    Path(out).write_text(json.dumps({
        "rc": rc, "pause_s": sum(s for _, s in pauses), "collections": len(pauses),
        "full_collections": len(full), "full_s": sum(full), "longest_s": max(full, default=0.0),
        "median_full_s": statistics.median(full) if full else 0.0,
        "median_walked": statistics.median(n for n, _ in walked) if walked else 0,
        "walked": [n for n, _ in walked], "frozen": [n for _, n in walked]}))
    return rc


def run_case(case: str, mode: str) -> dict[str, Any]:
    """One pipeline run of ``case`` in ``mode``, in a child process."""
    with tempfile.TemporaryDirectory(prefix="gc_pauses_") as tmp:
        work = Path(tmp)
        argv = [*CASES[case], "--model-finetune-layers", "0", "--serve", "false",
                "--store", str(work / "store"), "--report-dir", str(work / "report"),
                "--work-dir", str(work / "work"), "--storage-path", str(work / "ray")]
        env = {**os.environ, GC_FREEZE_ENV: MODES[mode]}
        began = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", str(work / "gc.json"), *argv],
                       env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        figures = json.loads((work / "gc.json").read_text())
        report = json.loads((work / "report" / "metrics.json").read_text())
    ours, retrain = (update_seconds(report, arm)[1:] for arm in ("incremental", "full_retrain"))
    figures.update(wall_s=time.perf_counter() - began,
                   ours_s=finite_mean(ours)[0], retrain_s=finite_mean(retrain)[0])
    figures["ours_over_retrain"] = figures["ours_s"] / figures["retrain_s"]
    return figures


def measure(case: str, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in (list(MODES) if r % 2 == 0 else list(reversed(MODES))):
            runs[mode].append(run_case(case, mode))
            print(f"{case} {mode}: {runs[mode][-1]}", flush=True)
    return {"case": case, "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# gc_pauses (recorded {result['finished']} UTC; load average "
             f"{result['loadavg_start'][0]:.2f} -> {result['loadavg_end'][0]:.2f})", "",
             "Medians over the rounds; each cell's runs in the JSON.", "",
             "| case | heap | GC pauses s, all | full collections | a full collection: s, "
             "objects walked | longest s | pipeline wall s | ours / retrain per update |",
             "|---|---|---|---|---|---|---|---|"]
    for part in result["parts"]:
        for mode, runs in part["runs"].items():
            def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return statistics.median(run[key] for run in runs)
            lines.append(
                f"| {part['case']} | {mode} | {med('pause_s'):.2f} | "
                f"{med('full_collections'):.0f} ({med('full_s'):.2f} s) | "
                f"{med('median_full_s'):.3f}, {med('median_walked'):,.0f} | "
                f"{med('longest_s'):.2f} | {med('wall_s'):.1f} | {med('ours_over_retrain'):.2f} "
                f"({med('ours_s'):.2f} / {med('retrain_s'):.2f} s) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gc_pauses"))
    args = parser.parse_args()
    record_parts("gc_pauses", args, lambda case: measure(case, args.rounds), args.cases,
                 markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
