"""python benchmarks/train_throughput.py [--quick] [--repeats 3] [--n-windows 9] [--workers 2] ...

Training throughput and the cost of an incremental update, in one run (``--help``: every size).
The real MiniLM from the package (``finetune_layers=1``) and the synthetic drifting shop:

1. throughput: steady-state samples/s of Ray Train with 1 worker vs a plain single-process run
   of the same engine, ``training.fit.engine.fit`` (same model, examples, batch order and batch
   size). Ray's start-up (``TorchTrainer.fit()`` wall minus the worker's training loop) is
   reported apart.
   The same pair again with one torch thread each (``*_1t``), which load disturbs far less.
2. scaling: 2 Ray Train workers (one thread each) vs 1, in the same rounds. Rounds alternate
   the order of the arms (forward, then backward) so drifting machine load hits every arm
   alike; ratios are taken within a round, then the median over rounds.
3. incremental vs full retrain: windows 0..t-1 trained one by one with
   ``training.incremental.run_incremental`` into a local store, then (a) one incremental update
   on window t vs (b) a from-scratch retrain on windows 0..t merged (same epochs, same Ray
   workers, same ``fit_window``); both scored on window t+1 (rec NDCG@20, fraud AUC-PR).

Results: ``benchmarks/results/train_throughput.json`` and ``.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from train_throughput_md import markdown, verdicts

from training.cli import (
    LOCAL_RAY_ENV,
    ConfigError,
    add_dataclass_args,
    dataclass_from_args,
    require,
    setup_logging,
)
from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.synthetic import SyntheticShopConfig, generate
from training.evaluation.evaluate import evaluate_fraud, evaluate_rec
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.fit.engine import WorkerSettings, fit
from training.fit.loop import init_model
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig, ShopStreamModel, load_model
from training.store import open_store
from training.update.prepare import full_retrain_start

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
# Set before Ray is imported (it reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import, and
# only then binds a single-node cluster to 127.0.0.1); workers inherit them.
RAY_ENV = {**LOCAL_RAY_ENV, "RAY_AUTH_MODE": "disabled",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
PARTS = ("throughput", "incremental")


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the benchmark; the defaults finish in about 15 min on a 2-core CPU machine."""

    quick: bool = field(default=False, metadata={"cli": False, "help": "see --quick"})
    parts: tuple[str, ...] = field(default=PARTS, metadata={
        "help": "comma-separated parts to run: throughput (1+2), incremental (3)"})
    repeats: int = field(default=3, metadata={"help": "alternating throughput rounds"})
    tp_epochs: int = field(default=1, metadata={
        "help": "epochs over window 0 in the throughput rounds (longer steady state)"})
    batch_size: int = field(default=128, metadata={"help": "examples per task per step"})
    epochs: int = field(default=1, metadata={
        "help": "epochs of the incremental update and of the full retrain (the same)"})
    workers: int = field(default=2, metadata={
        "help": "Ray Train workers of the incremental runs and the full retrain"})
    n_windows: int = field(default=9, metadata={
        "help": "synthetic windows: t = n_windows-2 is updated, t+1 is evaluated"})
    interactions_per_window: int = field(default=6000, metadata={
        "help": "synthetic interaction rows per window"})
    transactions_per_window: int = field(default=2000, metadata={
        "help": "synthetic transactions per window"})
    n_users: int = field(default=2000, metadata={"help": "synthetic users"})
    n_items: int = field(default=800, metadata={"help": "synthetic items at window 0"})
    fraud_rate: float = field(default=0.03, metadata={
        "help": "synthetic fraud share (enough positives for a stable AUC-PR)"})
    gate_tolerance: float = field(default=0.01, metadata={
        "help": "promotion gate of the incremental runs (the product's default; 1.0 would "
                "promote every window and hide rejections)"})
    ray_cpus: int | None = field(default=None, metadata={
        "help": "CPUs of the local Ray (None: all of the machine's)"})
    seed: int = field(default=0, metadata={"help": "seed of the shop, model and training"})
    json_out: str = field(default=str(RESULTS / "train_throughput.json"), metadata={
        "help": "where the JSON result goes"})
    md_out: str = field(default=str(RESULTS / "train_throughput.md"), metadata={
        "help": "where the Markdown table goes"})

    def __post_init__(self) -> None:
        require(bool(self.parts) and set(self.parts) <= set(PARTS), "parts",
                f"must be a subset of {PARTS}, got {self.parts}")
        for name in ("repeats", "tp_epochs", "batch_size", "epochs", "workers"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        require(self.n_windows >= 3, "n_windows", "must be >= 3 (t-1, t and t+1)")
        require(self.ray_cpus is None or self.ray_cpus >= 1, "ray_cpus", "must be >= 1")

    def shop(self) -> SyntheticShopConfig:
        return SyntheticShopConfig(
            seed=self.seed, n_users=self.n_users, n_items=self.n_items,
            n_windows=self.n_windows, interactions_per_window=self.interactions_per_window,
            transactions_per_window=self.transactions_per_window, fraud_rate=self.fraud_rate)


QUICK = BenchConfig(quick=True, repeats=1, n_windows=3, interactions_per_window=1500,
                    transactions_per_window=600, n_users=400, n_items=200, workers=1)
MODEL = ModelConfig(finetune_layers=1)


class FitLog(logging.Handler):
    """Worker metrics of each ``fit_window`` call, read off its INFO line ("Ray Train run %s:
    %.1f s wall, metrics %s"): its FitResult carries only the overall samples/s."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fits: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if str(record.msg).startswith("Ray Train run") and isinstance(args, tuple) \
                and len(args) == 3 and isinstance(args[2], dict):
            self.fits.append({"fit_s": float(args[1]), **args[2]})  # type: ignore[arg-type]

    def pop(self, workers: int) -> dict[str, Any]:
        if not self.fits:
            raise RuntimeError("training.fit.raytrain.fit_window logged no 'Ray Train run' line: "
                               "has its log message changed? (FitLog reads it)")
        m = self.fits.pop()
        return {"workers": workers, "fit_s": m["fit_s"], "train_s": m["train_s"],
                "startup_s": m["fit_s"] - m["train_s"], "steps": m["step"],
                "first_step_s": m["first_step_s"], "torch_threads": m["torch_threads"],
                "samples_per_s": m["samples_per_s"] * workers,
                "steady_samples_per_s": m["steady_samples_per_s"] * workers,
                "loss": m["loss"]}


FITS = FitLog()


def plain_run(model: ShopStreamModel, examples: WindowExamples, train: TrainConfig
              ) -> dict[str, Any]:
    """The Ray worker's engine (``training.fit.engine.fit``) in this process, without Ray."""
    began = time.perf_counter()
    run = fit(model, examples, train, WorkerSettings()).run
    return {"workers": 0, "setup_s": run.clock.began - began, "steps": run.clock.steps,
            **run.clock.metrics(), "loss": run.mean_losses()["loss"]}


def ray_run(model: ShopStreamModel, examples: WindowExamples, train: TrainConfig,
            inc: IncrementalConfig, name: str) -> tuple[dict[str, Any], ShopStreamModel]:
    """One ``training.fit.raytrain.fit_window`` (the production path) and its worker metrics."""
    from training.fit.raytrain import fit_window

    began = time.perf_counter()
    fit = fit_window(inc, train, model, None, None, examples, name)
    return {**FITS.pop(inc.scaling.num_workers), "call_s": time.perf_counter() - began}, fit.model


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing, not finite, or b is 0 (strict JSON)."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def throughput_part(cfg: BenchConfig, window: WindowData, cpus: float, gpus: float,
                    storage: Path) -> dict[str, Any]:
    model = init_model(MODEL, window)
    examples = WindowExamples.build(model, window, PurchaseHistory(MODEL.history_len))
    train = TrainConfig(epochs=cfg.tp_epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    one = IncrementalConfig.of(trainer="ray", num_workers=1, cpus_per_worker=cpus,
                               storage_path=str(storage), max_failures=0)
    # The *_1t pair runs everything on one thread: a single-threaded process suffers far less
    # from other people's load than one whose two OpenMP threads wait on each other.
    rays = {"ray_1w": one, "ray_2w": one.with_settings(num_workers=2, cpus_per_worker=cpus / 2),
            "ray_1w_1t": one.with_settings(cpus_per_worker=1.0)}
    skipped = f"2 workers need 2 GPUs, Ray sees {gpus:g}" if 0 < gpus < 2 else None
    if skipped:
        del rays["ray_2w"]
    threads = torch.get_num_threads()
    plains = {"plain": threads, "plain_1t": 1}
    names = [n for n in ("plain", "ray_1w", "ray_2w", "ray_1w_1t", "plain_1t")
             if n in rays or n in plains]

    def arm(name: str) -> dict[str, Any]:
        if name in rays:
            return ray_run(model, examples, train, rays[name], name)[0]
        torch.set_num_threads(plains[name])
        try:
            return plain_run(model, examples, train)
        finally:
            torch.set_num_threads(threads)

    rounds: list[dict[str, Any]] = []
    for r in tqdm(range(cfg.repeats), desc="throughput rounds", unit="round"):
        order = names if r % 2 == 0 else names[::-1]
        rounds.append({"order": order, "loadavg": os.getloadavg()[0],
                       **{name: arm(name) for name in order}})
    keys = ("steady_samples_per_s", "samples_per_s", "first_step_s", "train_s", "fit_s",
            "startup_s", "setup_s", "torch_threads")
    median = {name: {k: statistics.median(rd[name][k] for rd in rounds) for k in keys
                     if k in rounds[0][name]} for name in names}
    pairs = {"ray_1w/plain": ("ray_1w", "plain", "steady_samples_per_s"),
             "ray_1w_1t/plain_1t": ("ray_1w_1t", "plain_1t", "steady_samples_per_s"),
             "ray_2w/ray_1w": ("ray_2w", "ray_1w", "steady_samples_per_s"),
             "ray_2w/ray_1w fit wall": ("ray_2w", "ray_1w", "fit_s"),
             "ray_2w/ray_1w_1t": ("ray_2w", "ray_1w_1t", "steady_samples_per_s")}
    ratios = {label: [ratio(rd[a][k], rd[b][k]) for rd in rounds]
              for label, (a, b, k) in pairs.items() if a in names and b in names}
    return {"examples": {"rec": len(examples.rec), "fraud": len(examples.fraud)},
            "train_config": dataclasses.asdict(train), "rounds": rounds, "median": median,
            "ratios": ratios, "two_workers_skipped": skipped,
            "median_ratio": {k: _median(v) for k, v in ratios.items()}}


def _quality(models: dict[str, ShopStreamModel], seen: WindowData, target: WindowData,
             k: int) -> dict[str, Any]:
    history = PurchaseHistory(MODEL.history_len).update(seen.interactions)
    out: dict[str, Any] = {}
    for name, model in models.items():
        rec = evaluate_rec(model, history, seen.interactions, target, k=k)
        fraud = evaluate_fraud(model, history, target)
        out[name] = {f"ndcg@{k}": rec["model"][f"all/ndcg@{k}"], "auc_pr": fraud["auc_pr"]}
    out["popularity"] = {f"ndcg@{k}": rec["popularity"][f"all/ndcg@{k}"], "auc_pr": None}
    return out


def _load_version(store: str, version: str, directory: Path) -> ShopStreamModel:
    open_store(store).load(version, directory)
    return load_model(directory)


def _incremental_chain(inc: IncrementalConfig, train: TrainConfig, shop: SyntheticShopConfig,
                       windows: list[WindowData]) -> tuple[list[dict[str, Any]],
                                                           dict[str, Any], dict[str, Any]]:
    """Windows 0..t-1 one by one, then the timed update on t: (priming, update row, summary)."""
    from training.update.run import run_incremental

    priming = []
    for window in tqdm(windows[:-2], desc="incremental windows 0..t-1", unit="window"):
        summary = run_incremental(dataclasses.replace(inc, window=window.window_id), train,
                                  MODEL, shop)
        priming.append({"window": window.window_id, "seconds": summary["seconds"],
                        "promoted": summary["promoted"], **FITS.pop(inc.scaling.num_workers)})
    began = time.perf_counter()
    update = run_incremental(dataclasses.replace(inc, window=windows[-2].window_id), train,
                             MODEL, shop)
    row = {"wall_s": time.perf_counter() - began, "promoted": update["promoted"],
           "gate": update["gate"], "phases": update.get("phases", {}),
           **FITS.pop(inc.scaling.num_workers)}
    return priming, row, update


def incremental_part(cfg: BenchConfig, cpus: float, gpus: float, workdir: Path
                     ) -> dict[str, Any]:
    shop = cfg.shop()
    windows = generate(shop).windows
    t = len(windows) - 2
    workers = min(cfg.workers, int(gpus)) if gpus else cfg.workers
    train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    inc = IncrementalConfig.of(source="synthetic", store=str(workdir / "store"),
                               trainer="ray", num_workers=workers,
                               cpus_per_worker=cpus / workers,
                               storage_path=str(workdir / "ray"), max_failures=0,
                               gate_tolerance=cfg.gate_tolerance, use_best_config=False)
    priming, update_row, update = _incremental_chain(inc, train, shop, windows)
    began = time.perf_counter()
    # The same start as the pipeline's full-retrain arm: every window point-in-time.
    merged, full_model, examples = full_retrain_start(MODEL, windows[:t + 1])
    full_row, full_model = ray_run(full_model, examples, train, inc, "full-retrain")
    full_row["wall_s"] = time.perf_counter() - began
    models = {"incremental": _load_version(inc.store.uri, update["version"], workdir / "inc"),
              "full_retrain": full_model}
    if update["parent"]:
        models["stale_t-1"] = _load_version(inc.store.uri, update["parent"], workdir / "stale")
    quality = _quality(models, merged, windows[t + 1], train.eval_k)
    return {
        "shop": dataclasses.asdict(shop), "train_config": dataclasses.asdict(train),
        "workers": workers, "t": t, "updated_window": windows[t].window_id,
        "gate_tolerance": cfg.gate_tolerance,
        "eval_window": windows[t + 1].window_id, "priming": priming,
        "incremental": update_row, "full_retrain": full_row, "quality": quality,
        "time_ratio": {k: ratio(update_row[k], full_row[k]) for k in ("wall_s", "fit_s",
                                                                      "train_s")},
        "quality_ratio": {m: ratio(quality["incremental"][m], quality["full_retrain"][m])
                          for m in (f"ndcg@{train.eval_k}", "auc_pr")}}


def machine() -> dict[str, Any]:
    import ray

    cuda = torch.cuda.is_available()
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "cuda_available": cuda,
            "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor()
            or "cpu", "torch_threads_driver": torch.get_num_threads()}


def start_ray(cfg: BenchConfig) -> tuple[float, float]:
    """A local Ray on 127.0.0.1; (CPUs, GPUs) it sees."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    env = {key: os.environ[key] for key in RAY_ENV}
    ray.init(address="local", num_cpus=cfg.ray_cpus, include_dashboard=False,
             runtime_env={"env_vars": env})
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 1)), float(resources.get("GPU", 0))


def write(cfg: BenchConfig, result: dict[str, Any], began: float) -> str:
    """Write the JSON and the Markdown table (after every part: a long run killed by a
    timeout keeps what it measured); returns the table."""
    from training.update.run import json_safe  # imports Ray, which is up by now

    result.update(loadavg_end=os.getloadavg(), seconds=time.perf_counter() - began,
                  finished=time.strftime("%Y-%m-%d %H:%M"), verdicts=verdicts(result))
    table = markdown(result)
    for path, text in ((Path(cfg.json_out), json.dumps(json_safe(result), indent=2) + "\n"),
                       (Path(cfg.md_out), table)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return table


def run(cfg: BenchConfig) -> str:
    """Every part of the benchmark in this process; the Markdown table of the results."""
    began = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "train_throughput", "config": dataclasses.asdict(cfg),
                              "loadavg_start": os.getloadavg(), "complete": False}
    cpus, gpus = start_ray(cfg)
    result["machine"] = {**machine(), "ray_cpus": cpus, "ray_gpus": gpus}
    result["env"] = {key: os.environ.get(key) for key in RAY_ENV}
    raytrain_log = logging.getLogger("training.fit.raytrain")
    raytrain_log.addHandler(FITS)
    raytrain_log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="shopstream-bench-") as tmp:
        if "throughput" in cfg.parts:
            window = generate(cfg.shop()).windows[0]
            result["throughput"] = throughput_part(cfg, window, cpus, gpus, Path(tmp) / "tp")
            result["loadavg_after_throughput"] = os.getloadavg()
            write(cfg, result, began)
        if "incremental" in cfg.parts:
            result["incremental"] = incremental_part(cfg, cpus, gpus, Path(tmp))
    result["complete"] = True
    return write(cfg, result, began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_throughput.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 3 min on an idle "
                        "2-core machine): tiny shop, one round; the other flags still apply")
    add_dataclass_args(parser, BenchConfig)
    args = parser.parse_args(argv)
    try:
        cfg = dataclass_from_args(BenchConfig, args, base=QUICK if args.quick else BenchConfig())
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging()
    table = run(cfg)
    print("\n" + table)
    print(f"JSON: {cfg.json_out}\nMarkdown: {cfg.md_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
