"""python benchmarks/forgetting.py [--seeds 0 1] [--variants none replay distill replay+distill]

Forgetting with replay and distillation on and off, measured by the main job itself: the
one forgetting experiment is the pipeline's (``cluster.runner``: after each update every
neural method is re-scored on every earlier window; ``cluster.comparison.report_data``
turns that into drops). This script only runs it for each variant and seed and sets the
runs side by side.

Each (variant, seed) is one run of ``python -m cluster.pipeline`` into
``<out>/<variant>-seed<seed>`` on the synthetic drifting shop of the recorded synthetic
report (``reports/synthetic``: 6 weekly windows, the seasonal shift and the fraud campaign
change at window 3), with ``--synth-seed`` and ``--seed`` set to the seed, the variant's
``--replay-ratio`` / ``--distill-weight`` (the defaults, 0.3 and 0.5, where a variant has
them on, 0 where off), methods: ours only, in-process trainer, frozen MiniLM, no Serve.
An existing run's ``metrics.json`` is reused (``--rerun`` starts over).

Per run, from its own report: the mean forgetting of each task over the earlier windows
(best score on window j by a version trained before the latest, minus the latest version's
score there; positive = forgot; Chaudhry et al. 2018) and the prequential mean of each
task's main metric (what each window got from the model that had not seen it: the price
of stability, if any). Window j is re-scored on its own rows, which the later versions
trained on, so the drop measures how much of a learned window is lost, not how well it
generalises. Across seeds: the mean and the range; with a few seeds, a difference inside
the ranges is not a finding.

FGM/PGD robustness, once part 2 here, is measured by benchmarks/fraud_robustness.py.

Writes ``benchmarks/results/forgetting.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cluster.comparison.report_data import finite_mean, mean_forgetting, series

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OURS = "incremental"
TASKS = ("rec", "fraud")
# The recorded synthetic report's shop (reports/README.md).
SHOP = ["--synth-n-windows", "6", "--synth-interactions-per-window", "2500",
        "--synth-transactions-per-window", "1200", "--synth-n-users", "600",
        "--synth-n-items", "300", "--synth-fraud-rate", "0.04"]
VARIANTS: dict[str, list[str]] = {
    "none": ["--replay-ratio", "0", "--distill-weight", "0"],
    "replay": ["--distill-weight", "0"],
    "distill": ["--replay-ratio", "0"],
    "replay+distill": [],  # the defaults
}


def run(variant: str, seed: int, out: Path, rerun: bool) -> dict[str, Any]:
    """The run's metrics.json (running the pipeline first unless it is there)."""
    run_dir = out / f"{variant}-seed{seed}"
    metrics = run_dir / "report" / "metrics.json"
    if rerun and run_dir.exists():
        shutil.rmtree(run_dir)  # the pipeline resumes a run it finds: start clean
    if not metrics.exists():
        cmd = [sys.executable, "-m", "cluster.pipeline", *SHOP, "--synth-seed", str(seed),
               "--seed", str(seed), "--store", str(run_dir / "store"),
               "--report-dir", str(run_dir / "report"), "--work-dir", str(run_dir / "work"),
               "--storage-path", str(run_dir / "ray"), "--model-finetune-layers", "0",
               "--once", "--serve", "false", "--trainer", "local", "--methods", OURS,
               "--forgetting", "true", *VARIANTS[variant]]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


def run_row(variant: str, seed: int, result: dict[str, Any]) -> dict[str, Any]:
    """One run's figures: per task, mean forgetting (and over how many windows) and the
    prequential mean of the main metric."""
    row: dict[str, Any] = {"variant": variant, "seed": seed}
    for task in TASKS:
        main = result["tasks"].get(task)
        if main is None:
            continue
        drop, n = mean_forgetting(result, OURS, task)
        row[f"{task}_forgetting"], row[f"{task}_windows"] = drop, n
        row[f"{task}_prequential"] = finite_mean(series(result, OURS, task, main))[0]
        row[f"{task}_metric"] = main
    return row


def aggregate(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """Per variant and task: mean and range over seeds of forgetting and prequential."""
    out = []
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        for task in TASKS:
            keys = (f"{task}_forgetting", f"{task}_prequential")
            if not mine or keys[0] not in mine[0]:
                continue
            entry: dict[str, Any] = {"variant": variant, "task": task,
                                     "metric": mine[0][f"{task}_metric"], "seeds": len(mine)}
            for key, name in zip(keys, ("forgetting", "prequential")):
                values = np.asarray([r[key] for r in mine], dtype=float)
                entry[name] = float(np.nanmean(values))
                entry[f"{name}_range"] = [float(np.nanmin(values)), float(np.nanmax(values))]
            out.append(entry)
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| task (metric) | variant | mean forgetting [min, max over seeds] | "
             "prequential mean [min, max] | seeds |", "|---|---|---|---|---|"]
    for e in table:
        f, p = e["forgetting_range"], e["prequential_range"]
        lines.append(f"| {e['task']} ({e['metric']}) | {e['variant']} | "
                     f"{e['forgetting']:+.4f} [{f[0]:+.4f}, {f[1]:+.4f}] | "
                     f"{e['prequential']:.4f} [{p[0]:.4f}, {p[1]:.4f}] | {e['seeds']} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    """Mean forgetting per variant, one panel per task, the seed range as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(e["task"] == t for e in table)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [e for e in table if e["task"] == task]
        means = [e["forgetting"] for e in rows]
        err = np.asarray([[m - e["forgetting_range"][0], e["forgetting_range"][1] - m]
                          for m, e in zip(means, rows)]).T
        ax.bar([e["variant"] for e in rows], means, yerr=err, capsize=4, color="#4477aa")
        ax.axhline(0.0, color="black", linewidth=0.8)
        # At least +-0.01 shown, so float noise (1e-17) does not fill the panel.
        top = max(0.01, *(e["forgetting_range"][1] for e in rows))
        low = min(-0.01, *(e["forgetting_range"][0] for e in rows))
        ax.set_ylim(low * 1.1, top * 1.1)
        ax.set_title(f"{task}: mean forgetting of {rows[0]['metric']}")
        ax.set_ylabel("best earlier - latest (positive = forgot)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "forgetting")
    parser.add_argument("--rerun", action="store_true", help="redo runs already on disk")
    args = parser.parse_args(argv)
    rows = [run_row(v, s, run(v, s, args.out, args.rerun))
            for v in args.variants for s in args.seeds]
    table = aggregate(rows, args.variants)
    text = markdown(table)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forgetting.json").write_text(json.dumps({"runs": rows, "table": table},
                                                        indent=2))
    (RESULTS / "forgetting.md").write_text(text)
    plot(table, RESULTS / "forgetting.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
