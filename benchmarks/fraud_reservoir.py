"""Fraud quality when the replay reservoir thins the past: class-split reservoir vs uniform.

    python benchmarks/fraud_reservoir.py --baseline-ref 2c896bf --candidate-ref c55fb56 \
        --capacity 1000

The served fraud trees are refitted each update on the labelled transactions the version
keeps: the replay reservoir plus the window. The shipped data never fill the default
reservoir (20,000 rows; the ULB slice has 12,340 transactions, the report's synthetic shop
7,200), but two days of ULB traffic (284,807 transactions) would: by the last hours a
reservoir of 20,000 holds about 8% of the past. This benchmark puts the shipped data in
that regime with a reservoir of ``--capacity`` rows (1,000 = about 8% of the ULB slice)
and compares, in one run each through the main job (``cluster.pipeline``, in-process
trainer, MiniLM frozen, methods ours + HistGradientBoosting, which keeps every label):

* ``uniform``: the code of ``--baseline-ref`` (one uniform reservoir per table);
* ``class-split``: the code of ``--candidate-ref`` (c55fb56: frauds kept whole, legit rows
  thinned and weighted in the tree fit, replay draws in the true class proportion), tried
  and not kept (benchmarks/recorded/fraud_reservoir.md says why);

each from a git worktree of its commit.

Sources: the ULB hours and the report's synthetic shop (its fraud campaign changes at week
3), at label delay 0 and 1. Every figure is the report's own pooled value with its 95%
interval. Printed and written to ``benchmarks/results/fraud_reservoir.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from git_worktree import worktrees

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OURS, HGB = "incremental", "hist_gradient_boosting"
METRICS = ("auc_pr", "roc_auc", "recall@1%fpr", "precision@budget")
# The report's synthetic shop (reports/README.md: synthetic/shop-week-delay*).
SHOP = ["--synth-n-windows", "6", "--synth-interactions-per-window", "2500",
        "--synth-transactions-per-window", "1200", "--synth-n-users", "600",
        "--synth-n-items", "300", "--synth-fraud-rate", "0.04"]


def source_args(source: str, ulb_path: str) -> list[str]:
    if source == "synthetic":
        return SHOP
    return ["--source", "ulb", "--path", ulb_path, "--freq", "hour"]


def run(code: Path, source: str, delay: int, capacity: int, ulb_path: str, out: Path,
        timeout_s: float) -> dict[str, Any]:
    """The metrics.json of one main-job run from the checkout ``code``."""
    if out.exists():
        shutil.rmtree(out)  # the pipeline resumes a run it finds: start clean
    cmd = [sys.executable, "-m", "cluster.pipeline", *source_args(source, ulb_path),
           "--store", str(out / "store"), "--report-dir", str(out / "report"),
           "--work-dir", str(out / "work"), "--storage-path", str(out / "ray"),
           "--model-finetune-layers", "0", "--trainer", "local", "--serve", "false",
           "--methods", f"{OURS},{HGB}", "--forgetting", "false",
           "--replay-capacity", str(capacity), "--label-delay", str(delay)]
    print("$", " ".join(cmd), f"(in {code})", flush=True)
    subprocess.run(cmd, cwd=code, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=timeout_s)
    return json.loads((out / "report" / "metrics.json").read_text())


def row(reservoir: str, source: str, delay: int, result: dict[str, Any]) -> dict[str, Any]:
    pooled = result["fraud_intervals"]
    out: dict[str, Any] = {"reservoir": reservoir, "source": source, "delay": delay,
                           "n": pooled["n"], "n_pos": pooled["n_pos"]}
    for method in (OURS, HGB):
        for metric in METRICS:
            cell = pooled["methods"][method][metric]
            out[f"{method}/{metric}"] = [cell["value"], cell["lo"], cell["hi"]]
        out[f"{method}/ece"] = pooled["calibration"][method]["ece"]
    paired = pooled["paired"].get(f"{OURS} vs {HGB}", {}).get("auc_pr")
    out["ap_diff"] = None if paired is None else [paired["diff"], paired["lo"], paired["hi"]]
    return out


def cell(value: list[float]) -> str:
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def markdown(rows: list[dict[str, Any]], capacity: int) -> str:
    out = [f"Reservoir capacity {capacity} rows per table; pooled over the evaluated windows.",
           "", "| source | delay | reservoir | ours AUC-PR | HGB AUC-PR | ours - HGB AP "
           "[95% CI] | ours R@1%FPR | HGB R@1%FPR | ours P@budget | ours ECE | HGB ECE |",
           "|---" * 11 + "|"]
    for r in rows:
        diff = "n/a" if r["ap_diff"] is None else \
            f"{r['ap_diff'][0]:+.3f} [{r['ap_diff'][1]:+.3f}, {r['ap_diff'][2]:+.3f}]"
        out.append(
            f"| {r['source']} | {r['delay']} | {r['reservoir']} | {cell(r[OURS + '/auc_pr'])} "
            f"| {cell(r[HGB + '/auc_pr'])} | {diff} | {cell(r[OURS + '/recall@1%fpr'])} | "
            f"{cell(r[HGB + '/recall@1%fpr'])} | {cell(r[OURS + '/precision@budget'])} | "
            f"{r[OURS + '/ece']:.4f} | {r[HGB + '/ece']:.4f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", required=True,
                        help="commit with the uniform reservoir")
    parser.add_argument("--candidate-ref", required=True,
                        help="commit with the class-split reservoir (c55fb56)")
    parser.add_argument("--capacity", type=int, default=1000)
    parser.add_argument("--sources", nargs="+", default=["ulb", "synthetic"],
                        choices=["ulb", "synthetic"])
    parser.add_argument("--delays", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--ulb-path",
                        default="../shared/data/ulb_creditcard/creditcard_first_6h.csv")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per run")
    args = parser.parse_args(argv)
    rows = []
    refs = {"uniform": args.baseline_ref, "class-split": args.candidate_ref}
    with tempfile.TemporaryDirectory(prefix="fraud-reservoir-") as tmp, \
            worktrees(refs, Path(tmp)) as codes:
        ulb = str(Path(args.ulb_path).resolve())
        for source in args.sources:
            for delay in args.delays:
                for name, code in codes.items():
                    result = run(code, source, delay, args.capacity, ulb,
                                 Path(tmp) / f"{name}-{source}-{delay}", args.timeout_s)
                    rows.append(row(name, source, delay, result))
    table = markdown(rows, args.capacity)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fraud_reservoir.json").write_text(json.dumps(
        {"capacity": args.capacity, "baseline_ref": args.baseline_ref,
         "candidate_ref": args.candidate_ref, "rows": rows}, indent=2))
    (RESULTS / "fraud_reservoir.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
