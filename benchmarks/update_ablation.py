"""Why do incremental updates help or hurt? One pipeline run per suspect setting.

    python benchmarks/update_ablation.py --path ../shared/data/online_retail --freqs month week

Each variant is the main job (``cluster.pipeline``) on Online Retail with only ours and the
two rec baselines, the in-process trainer (``--trainer local``: no Ray Train start-up, the
same engine), no forgetting and no Serve, and one setting changed from the defaults: the
learning-rate peak and warm-up restarted at every update, distillation, replay, the carried
tail, epochs, the staleness policy and the gate's slice. Printed and written to
``--out`` (``.json``, ``.md``): per variant, mean warm NDCG@20 of ours and of
repeat-then-popular over the scored windows, the ratio, and how many updates the gate
promoted (incremental candidates, fallbacks, rejections).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "no_distillation": ["--distill-weight", "0"],
    "no_replay": ["--replay-ratio", "0"],
    "no_carried_tail": ["--carry-holdout", "false"],
    "no_warmup": ["--warmup-frac", "0"],
    "half_lr": ["--lr", "1e-3"],
    "two_epochs": ["--epochs", "2"],
    "old_policy_hold": ["--on-reject", "hold", "--fallback-after", "0"],
    "old_gate_with_replay": ["--gate-replay", "true"],
    "old_gate_and_policy": ["--gate-replay", "true", "--on-reject", "hold",
                            "--fallback-after", "0"],
}


def run_variant(path: str, freq: str, flags: list[str], work: Path) -> dict[str, Any]:
    """One pipeline run; returns its metrics.json and wall seconds."""
    began = time.perf_counter()
    cmd = [sys.executable, "-m", "cluster.pipeline", "--source", "online_retail",
           "--path", path, "--freq", freq, "--methods",
           "incremental,popularity,repeat_then_popular", "--trainer", "local",
           "--forgetting", "false", "--serve", "false", "--model-finetune-layers", "0",
           "--store", str(work / "store"), "--report-dir", str(work / "report"),
           "--work-dir", str(work / "work"), "--storage-path", str(work / "ray"), *flags]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    return {"metrics": metrics, "seconds": time.perf_counter() - began}


def mean_warm(metrics: dict[str, Any], method: str) -> float:
    values = [row.get(method, {}).get("rec", {}).get("warm/ndcg@20")
              for row in metrics["prequential"].values()]
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    ours, rtp = mean_warm(metrics, "incremental"), mean_warm(metrics, "repeat_then_popular")
    updates = [u.get("incremental", {}) for u in metrics["updates"].values()]
    promoted = [u for u in updates if u.get("promoted")]
    return {"ours_warm_ndcg": ours, "rtp_warm_ndcg": rtp,
            "popularity_warm_ndcg": mean_warm(metrics, "popularity"),
            "ratio_vs_rtp": ours / rtp if rtp else math.nan,
            "updates": len(updates),
            "promoted_incremental": sum(u.get("kind", "incremental") == "incremental"
                                        for u in promoted),
            "promoted_fallback": sum(u.get("kind") == "fallback_retrain" for u in promoted),
            "rejected": len(updates) - len(promoted),
            "gate_reasons": [u.get("gate") for u in updates if not u.get("promoted")]}


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| freq | variant | ours warm NDCG@20 | RTP | ours/RTP | promoted (incr/fallback) "
           "| rejected | wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['freq']} | {r['variant']} | {r['ours_warm_ndcg']:.4f} "
                   f"| {r['rtp_warm_ndcg']:.4f} | {r['ratio_vs_rtp']:.3f} "
                   f"| {r['promoted_incremental']}/{r['promoted_fallback']} "
                   f"| {r['rejected']} of {r['updates']} | {r['seconds']:.0f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="../shared/data/online_retail")
    parser.add_argument("--freqs", nargs="+", default=["month", "week"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--out", default=str(RESULTS / "update_ablation"),
                        help="results path without suffix, e.g. .../update_ablation_month")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for freq in args.freqs:
        for name in args.variants:
            with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
                run = run_variant(args.path, freq, VARIANTS[name], Path(tmp))
            row = {"freq": freq, "variant": name, "flags": VARIANTS[name],
                   "seconds": run["seconds"], **summarise(run["metrics"])}
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
            out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
