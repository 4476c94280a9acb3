"""Memory and throughput of a Ray Train update as the window grows (issue #13).

    python benchmarks/data_scaling.py --base 500000 --scales 1 4 10 --baseline-ref 6b3e2f1

For each scale, one process writes a synthetic shop whose windows hold ``scale x base``
interactions to a folder (as a user's windows sit on disk), and a child process (a fresh
driver and a fresh local Ray) prepares the first update from it on the driver (the window
read, examples built there) and fits it on the Ray Train trainer across
``--num-workers`` workers for ``--max-steps`` steps. Measured per child: the driver's peak
RSS (its own ``ru_maxrss``), the split before the fit, and its RSS through each step of the
update (:class:`DriverStages`); every Ray Train worker's peak
RSS (the kernel's high-water mark, read every 0.2 s); the bytes of all examples and of one
rank's share; the loop's samples/s (steady state) and the fit's wall time.

With ``--baseline-ref``, the same child also runs from a git worktree of that commit (the
path before this change: the examples as one object-store payload every worker fetched
whole) at ``--baseline-scales``, side by side in the same run. Printed and written to
``benchmarks/results/data_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from git_worktree import worktrees
from pipeline_contexts import rss_mib

from training.cli import LOCAL_RAY_ENV

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20


class PeakRss(threading.Thread):
    """The peak RSS of every process whose command line names ``marker``: the kernel's
    high-water mark (``VmHWM`` in ``/proc/<pid>/status``, Linux), read while it lives."""

    def __init__(self, marker: str, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.marker, self.every_s = marker.encode(), every_s
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if self.marker not in (proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:  # gone between the listing and the read
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        pid = int(proc.name)
                        self.peaks[pid] = max(self.peaks.get(pid, 0),
                                              int(line.split()[1]) * 1024)


class DriverStages(threading.Thread):
    """The driver's RSS through the update's steps: each step's RSS when it began and its
    peak (sampled every ``every_s``). A step is a call of one of the functions
    :meth:`wrap` names (or ``after <name>`` until the next one begins), so the figures say
    which part of ``prepare_update`` + ``fit_window`` holds what."""

    def __init__(self, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.every_s, self.current = every_s, "start"
        self.steps: dict[str, dict[str, float]] = {}
        self.done = threading.Event()
        self.enter("start")

    def enter(self, name: str) -> None:
        rss = float(rss_mib())
        self.current = name
        step = self.steps.setdefault(name, {"start_mib": rss, "peak_mib": rss})
        step["peak_mib"] = max(step["peak_mib"], rss)

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            step = self.steps[self.current]
            step["peak_mib"] = max(step["peak_mib"], rss_mib())

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        """Time ``owner.name`` as a step (skipped where a checkout lacks it)."""
        fn = getattr(owner, name, None)
        if fn is None:
            return
        label = label or name

        def stepped(*args: Any, **kwargs: Any) -> Any:
            self.enter(label)
            try:
                return fn(*args, **kwargs)
            finally:
                self.enter(f"after {label}")

        setattr(owner, name, stepped)


def nbytes(examples: Any) -> int:
    """The examples' bytes once built (``WindowExamples.nbytes``; summed here for a
    baseline checkout that predates it)."""
    if isinstance(getattr(examples, "nbytes", None), int):
        return int(examples.nbytes)
    return sum(getattr(part, name).nbytes for part in (examples.rec, examples.fraud)
               for name in vars(part))


def synthetic_shop(rows: int) -> Any:
    from training.data.synthetic import SyntheticShopConfig
    return SyntheticShopConfig(n_windows=2, interactions_per_window=rows,
                               transactions_per_window=max(1000, rows // 10),
                               n_users=max(2000, rows // 20), n_items=2000)


def write_shop(rows: int, folder: Path) -> None:
    """The shop's windows as a folder (in a process of its own: the update's driver reads
    them from disk like a user's, it does not generate them)."""
    from training.data.synthetic import generate
    from training.data.windows import write_window
    cfg = synthetic_shop(rows)
    for window in generate(cfg).windows:
        write_window(folder, window, cfg.freq, source="synthetic")


def child(rows: int, folder: Path, workers: int, max_steps: int, out: Path) -> None:
    """One measurement in this process (run from the checkout under test): the first
    update of the windows in ``folder``."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    import training
    import training.fit.raytrain as raytrain
    from training.config import TrainConfig
    from training.fit.raytrain import fit_window
    from training.incremental_config import IncrementalConfig
    from training.model import ModelConfig
    from training.update.prepare import prepare_update

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    watch = PeakRss("RayTrainWorker")
    watch.start()
    stages = DriverStages()
    for name in ("write_start_state", "upload_start", "write_shards", "release_memory",
                 "fit_result"):
        stages.wrap(raytrain, name)
    stages.wrap(raytrain.TorchTrainer, "fit", "TorchTrainer.fit")
    stages.start()
    with tempfile.TemporaryDirectory(prefix="data-scaling-") as tmp:
        inc = IncrementalConfig.of(source="windows", path=str(folder), store=f"{tmp}/store",
                                   storage_path=f"{tmp}/ray", num_workers=workers,
                                   trainer="ray")
        train_cfg = TrainConfig(epochs=1, max_steps=max_steps)
        began = time.perf_counter()
        stages.enter("prepare_update")
        up = prepare_update(inc.store.open(), inc, train_cfg, ModelConfig(finetune_layers=0),
                            None, Path(tmp) / "prepare")
        # An update prepared by a checkout with Update.window_id no longer holds its window
        # (asking for .window would read it again).
        window_id = getattr(up, "window_id", None) or up.window.window_id
        prepare_s = time.perf_counter() - began
        before_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # Until the start state is written: the trainer chosen, the titles encoded.
        stages.enter("fit_window start")
        began = time.perf_counter()
        fit = fit_window(inc, train_cfg, up.model, None, None, up.examples, window_id)
        # Ray Train's fit() plus writing the rank files (where deferred repeat features are
        # built): prepare_s + fit_window_s is the update's cost up to its gate.
        fit_window_s = time.perf_counter() - began
    watch.done.set()
    stages.done.set()
    watch.join()
    ray.shutdown()
    total = nbytes(up.examples)
    out.write_text(json.dumps({
        "rows": rows, "code": str(Path(training.__file__).parents[1]),
        "purchases": len(up.examples.rec), "labelled_transactions": len(up.examples.fraud),
        "examples_mib": total / MIB, "examples_per_rank_mib": total / workers / MIB,
        "prepare_s": prepare_s, "fit_window_s": fit_window_s, "fit_s": fit.seconds,
        "loop_s": fit.loop_seconds,
        "steps": fit.steps, "samples_per_s": fit.samples_per_s,
        "driver_peak_before_fit_mib": before_fit / MIB,
        "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB,
        "worker_peak_mib": sorted(v / MIB for v in watch.peaks.values()),
        "driver_steps": stages.steps}))


def measure(code: Path, rows: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`child` from ``code`` in a fresh process; its figures."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(code)}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(rows),
                        "--folder", str(folder), "--num-workers", str(args.num_workers),
                        "--max-steps", str(args.max_steps), "--out", out.name],
                       cwd=code, env=env, check=True, timeout=args.timeout_s)
        return dict(json.loads(Path(out.name).read_text()))


def shop_folder(rows: int, tmp: Path, args: argparse.Namespace) -> Path:
    folder = tmp / f"shop-{rows}"
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--write-shop", str(rows),
                    "--folder", str(folder)], cwd=ROOT, check=True, timeout=args.timeout_s)
    return folder


def table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| path | purchases | examples MiB (per rank) | driver peak MiB (before fit) | "
             "worker peak MiB (max) | loop samples/s | fit s | prepare s | "
             "prepare + write + fit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['path']} | {r['purchases']:,} | {r['examples_mib']:.0f} "
            f"({r['examples_per_rank_mib']:.0f}) | {r['driver_peak_mib']:.0f} "
            f"({r['driver_peak_before_fit_mib']:.0f}) | {max(r['worker_peak_mib'] or [0]):.0f} | "
            f"{r['samples_per_s']:.0f} | {r['fit_s']:.1f} | {r['prepare_s']:.1f} | "
            f"{r['prepare_s'] + r['fit_window_s']:.1f} |")
    return lines


def steps_table(runs: list[dict[str, Any]]) -> list[str]:
    """The driver's RSS by step (:class:`DriverStages`), one column per run."""
    runs = [r for r in runs if r.get("driver_steps")]
    if not runs:
        return []
    names = list(dict.fromkeys(n for r in runs for n in r["driver_steps"]))
    lines = ["Driver RSS by step, MiB (at its start / its peak):", "",
             "| step | " + " | ".join(f"{r['path']} {r['scale']}x" for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for name in names:
        cells = [r["driver_steps"].get(name) for r in runs]
        lines.append(f"| {name} | " + " | ".join(
            f"{c['start_mib']:.0f} / {c['peak_mib']:.0f}" if c else "-" for c in cells) + " |")
    return lines


def update_s(run: dict[str, Any]) -> float:
    return float(run["prepare_s"] + run["fit_window_s"])


def ratios(runs: list[dict[str, Any]], scales: list[int]) -> list[str]:
    """The targets: growth from the smallest to the largest scale, and new/old at 1x."""
    new = {r["scale"]: r for r in runs if r["path"] == "shards"}
    old = {r["scale"]: r for r in runs if r["path"] == "baseline"}
    lo, hi = min(scales), max(scales)
    out = []
    if lo in new and hi in new:
        driver = new[hi]["driver_peak_mib"] / new[lo]["driver_peak_mib"]
        out.append(f"- driver peak at {hi}x / {lo}x: {driver:.2f} (target <= 1.5)")
        worker = max(new[hi]["worker_peak_mib"]) / max(new[lo]["worker_peak_mib"])
        out.append(f"- worker peak at {hi}x / {lo}x: {worker:.2f} (target <= 1.5)")
    for scale in sorted(set(new) & set(old)):
        out.append(f"- at {scale}x, this path / baseline: loop samples/s "
                   f"{new[scale]['samples_per_s'] / old[scale]['samples_per_s']:.2f} "
                   "(target >= 0.9 at 1x), worker peak "
                   f"{max(new[scale]['worker_peak_mib']) / max(old[scale]['worker_peak_mib']):.2f}"
                   f", fit wall {new[scale]['fit_s'] / old[scale]['fit_s']:.2f}, prepare + "
                   "write + fit "
                   f"{update_s(new[scale]) / update_s(old[scale]):.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=500_000, help="interactions per window at 1x")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--baseline-ref", default=None,
                        help="git commit of the path to compare with (None: no comparison)")
    parser.add_argument("--baseline-scales", type=int, nargs="+", default=[1])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=40,
                        help="optimizer steps per fit (the loop's rate needs only a few)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per child")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write-shop", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_shop is not None:
        write_shop(args.write_shop, args.folder)
        return 0
    if args.child is not None:
        child(args.child, args.folder, args.num_workers, args.max_steps, args.out)
        return 0
    load = [os.getloadavg()[0]]
    runs = []
    refs = {"baseline": args.baseline_ref} if args.baseline_ref else {}
    with tempfile.TemporaryDirectory(prefix="data-scaling-wt-") as tmp, \
            worktrees(refs, Path(tmp)) as codes:
        old = codes.get("baseline")
        for scale in args.scales:
            folder = shop_folder(scale * args.base, Path(tmp), args)
            for path, code in (("shards", ROOT), ("baseline", old)):
                if code is None or (path == "baseline" and scale not in args.baseline_scales):
                    continue
                run = {"path": path, "scale": scale,
                       **measure(code, scale * args.base, folder, args)}
                print(json.dumps(run), flush=True)
                runs.append(run)
            shutil.rmtree(folder)
    load.append(os.getloadavg()[0])
    report = [f"# data_scaling: base {args.base:,} interactions per window, scales {args.scales}, "
              f"{args.num_workers} workers, {args.max_steps} steps (load {load[0]:.2f} -> "
              f"{load[1]:.2f})", "", *table(runs), "", *ratios(runs, args.scales), "",
              *steps_table(runs)]
    print("\n".join(report))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_scaling.json").write_text(json.dumps(
        {"settings": vars(args) | {"out": None, "folder": None}, "load": load, "runs": runs},
        indent=1))
    (RESULTS / "data_scaling.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
