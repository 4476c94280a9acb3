"""Ablation of the recommender's defaults through the main job itself: ours against
repeat-then-popular and popularity, one setting changed per variant.

    python benchmarks/pipeline_ablation.py --sources week month synthetic \
        --variants default noterms nodrop

Each (variant, source) is one run of ``python -m cluster.pipeline`` (in-process trainer,
frozen MiniLM, no forgetting matrix, methods: ours + the two rec baselines) into
``runs/ablation/<variant>-<source>``; an existing run's ``metrics.json`` is reused
(``--rerun`` deletes the run first: the pipeline would resume a finished one and only
rewrite its report). The table takes every figure from the run's own report: warm
NDCG@20 with its 95% interval, the paired interval of ours - repeat-then-popular, cold
users against popularity, and how many incremental candidates were promoted. Printed and
written to ``benchmarks/results/pipeline_ablation.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OURS, RTP, POP = "incremental", "repeat_then_popular", "popularity"
# The shop `make demo` runs on (the Makefile's DEMO_SHOP).
DEMO_SHOP = ["--synth-n-windows", "4", "--synth-interactions-per-window", "2500",
             "--synth-transactions-per-window", "1200", "--synth-n-users", "600",
             "--synth-n-items", "300", "--synth-fraud-rate", "0.04"]
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "noterms": ["--repeat-bonus-grid=", "--count-weight-grid="],
    "nodrop": ["--id-dropout", "0"],
    "neither": ["--repeat-bonus-grid=", "--count-weight-grid=", "--id-dropout", "0"],
    # The top MiniLM layer trained with the towers (ModelConfig's default; the runs above
    # and the recorded reports keep the encoder frozen).
    "finetune1": ["--model-finetune-layers", "1"],
}


def source_args(source: str, path: str) -> list[str]:
    if source == "synthetic":
        return DEMO_SHOP
    return ["--source", "online_retail", "--path", path, "--freq", source]


def run(variant: str, source: str, path: str, out: Path, rerun: bool) -> dict[str, Any]:
    """The run's metrics.json (running the pipeline first unless it is there)."""
    run_dir = out / f"{variant}-{source}"
    metrics = run_dir / "report" / "metrics.json"
    if rerun and run_dir.exists():
        shutil.rmtree(run_dir)  # the pipeline resumes a run it finds: start clean
    if not metrics.exists():
        cmd = [sys.executable, "-m", "cluster.pipeline", *source_args(source, path),
               "--store", str(run_dir / "store"), "--report-dir", str(run_dir / "report"),
               "--work-dir", str(run_dir / "work"), "--storage-path", str(run_dir / "ray"),
               "--model-finetune-layers", "0", "--once", "--trainer", "local",
               "--methods", f"{OURS},{POP},{RTP}", "--forgetting", "false",
               *VARIANTS[variant]]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


def row(variant: str, source: str, result: dict[str, Any]) -> dict[str, Any]:
    iv = result["intervals"]
    warm = iv["methods"][OURS][iv["metric"]]
    vs_rtp = iv["paired"][f"{OURS} vs {RTP}"]["pooled"]
    cold = iv["paired_cold"][f"{OURS} vs {POP}"]["pooled"]
    promoted = [u[OURS].get("promoted", True) for u in result["updates"].values()
                if OURS in u]
    return {"variant": variant, "source": source, "warm": warm["mean"], "warm_lo": warm["lo"],
            "warm_hi": warm["hi"], "rtp": vs_rtp["mean_b"], "ratio": vs_rtp["mean_a"] /
            vs_rtp["mean_b"], "diff": vs_rtp["diff"], "diff_lo": vs_rtp["lo"],
            "diff_hi": vs_rtp["hi"], "cold": cold["mean_a"], "cold_pop": cold["mean_b"],
            "cold_diff_lo": cold["lo"], "cold_diff_hi": cold["hi"], "cold_n": cold["n"],
            "promoted": f"{sum(map(bool, promoted))} of {len(promoted)}"}


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| source | variant | ours warm NDCG@20 [95% CI] | RTP | ours / RTP | "
           "ours - RTP [95% CI] | cold: ours vs popularity (n) | cold diff [95% CI] | "
           "promoted |", "|---" * 9 + "|"]
    for r in rows:
        out.append(
            f"| {r['source']} | {r['variant']} | {r['warm']:.4f} [{r['warm_lo']:.4f}, "
            f"{r['warm_hi']:.4f}] | {r['rtp']:.4f} | {r['ratio']:.3f} | {r['diff']:+.4f} "
            f"[{r['diff_lo']:+.4f}, {r['diff_hi']:+.4f}] | {r['cold']:.4f} vs "
            f"{r['cold_pop']:.4f} ({r['cold_n']}) | [{r['cold_diff_lo']:+.4f}, "
            f"{r['cold_diff_hi']:+.4f}] | {r['promoted']} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["week", "month", "synthetic"],
                        choices=["week", "month", "synthetic"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--path", default="../shared/data/online_retail",
                        help="Online Retail daily CSVs (for week and month)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    parser.add_argument("--rerun", action="store_true", help="redo runs already on disk")
    args = parser.parse_args(argv)
    rows = [row(v, s, run(v, s, args.path, args.out, args.rerun))
            for s in args.sources for v in args.variants]
    table = markdown(rows)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline_ablation.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / "pipeline_ablation.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
