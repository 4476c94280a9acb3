"""python benchmarks/forgetting.py [--quick] [--seeds 0,1,2] [--synth-n-windows 6 ...]

Forgetting on the synthetic drifting shop, with replay + distillation on vs off (and each
alone), and whether FGM adversarial training of the fraud head makes it more robust.

For every method and seed: a fresh local store, then ``training.incremental.run_incremental``
on windows 0..T-1 in order (Ray Train, ``--num-workers`` workers; ``gate_tolerance=1`` so
every candidate is published and the real sequence of versions is measured). After update
``t`` the new version is scored on the held-out tails of windows 0..t (see
benchmarks/forgetting_eval.py: fixed histories and candidate pools per window).
Forgetting of window ``j`` after update ``t`` = best metric on ``j`` by an earlier update
minus the metric after ``t`` (Chaudhry et al. 2018; negative = it got better).

The tails are really unseen: ``run_incremental`` offers a whole window (its held-out tail
too) to the replay buffer, so later updates would replay the rows this benchmark scores.
With ``--feed head`` (the default) the runs read only each window's head (everything before
the tail) from a folder of windows (run_incremental then holds out the last ``holdout_frac``
of that head for its own gate, so an update trains on ~(1 - f)^2 = 64% of a window);
``--feed full`` feeds the whole windows, as production does, to show how much that leak
flatters replay.

Part 2 (``--fgm``): the replay+distill sequence again with ``adv_epsilon > 0``; every version
is scored on the next window's transactions, clean and under FGM/PGD perturbations of the
fraud head's numeric inputs (``training.fit.objective.adversarial_delta``).

Writes ``<results-dir>/<name>.json``, ``.md`` and ``.png`` (name ``forgetting``, or
``forgetting_quick`` with ``--quick``). The text encoder is the real MiniLM, frozen
(``--model-finetune-layers 0``): on a 2-core CPU one trainable MiniLM layer makes every step
~30x slower; forgetting is measured in everything that trains (embeddings, title projection,
towers, heads). Every TrainConfig / ModelConfig / SyntheticShopConfig setting is a flag
(``--train-*``, ``--model-*``, ``--synth-*``).

Cost is dominated by Ray Train's start-up in every update (~20 s; the training itself is
~5 s). Measured on the shared 2-core machine with other test suites running (load average
13-25, ~60 s per update): 26 min for the default (5 windows x 5 sequences), 5 min for
``--quick`` (2 windows x 3 sequences); updates that had the machine to themselves took
25-35 s, i.e. ~12-15 min and ~3 min. Scale up with ``--seeds``, ``--synth-n-windows``,
``--synth-interactions-per-window``, ``--train-epochs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from forgetting_eval import EvalSets, build_eval_sets, evaluate_version, robustness
from forgetting_plot import plot
from forgetting_report import (
    aggregate,
    comparisons,
    json_safe,
    main_table,
    markdown,
    noise_floor,
    robustness_summary,
    robustness_table,
)
from tqdm import tqdm

from cluster.comparison.tables import text_table
from training.cli import (
    LOCAL_RAY_ENV,
    ConfigError,
    add_dataclass_args,
    dataclass_from_args,
    require,
    setup_logging,
)
from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig, generate
from training.data.windows import write_window
from training.model import ModelConfig, ShopStreamModel, load_model
from training.store import open_store

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
# Ray must stay on loopback and quiet, and read these before `import ray` (see main()).
RAY_ENV = {**LOCAL_RAY_ENV, "RAY_AUTH_MODE": "disabled",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
METHODS: tuple[str, ...] = ("none", "replay", "distill", "replay+distill")
FGM_BASE = "replay+distill"
FGM_METHOD = "replay+distill+fgm"
FEEDS: tuple[str, ...] = ("head", "full")


@dataclass(frozen=True)
class ForgettingConfig:
    """Which continual-learning settings are compared, how, and where results go."""

    methods: tuple[str, ...] = field(default=METHODS, metadata={
        "help": f"comma-separated methods, from {','.join(METHODS)}"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={
        "help": "comma-separated seeds; each seeds the shop, the model and training (it "
                "overrides --synth-seed, --train-seed and --model-seed)"})
    replay_ratio: float = field(default=0.3, metadata={
        "help": "replay ratio of the methods with replay"})
    distill_weight: float = field(default=0.5, metadata={
        "help": "distillation weight of the methods with distillation"})
    fgm: bool = field(default=True, metadata={
        "help": f"part 2: also run {FGM_METHOD} and score robustness against {FGM_BASE}"})
    adv_epsilon: float = field(default=0.5, metadata={
        "help": "FGM training radius of the fgm run (std units, L2 per row)"})
    attack_epsilons: tuple[float, ...] = field(default=(0.25, 0.5, 1.0), metadata={
        "help": "comma-separated attack radii of the robustness evaluation"})
    pgd_steps: int = field(default=10, metadata={
        "help": "steps of the extra PGD attack (1: FGM only)"})
    feed: str = field(default="head", metadata={
        "help": "head: runs never see the scored tails; full: whole windows (tails leak "
                "into replay)"})
    holdout_frac: float = field(default=0.2, metadata={
        "help": "tail of each window that is scored (and run_incremental's holdout_frac)"})
    num_workers: int = field(default=1, metadata={"help": "Ray Train workers per update"})
    ray_cpus: int = field(default=2, metadata={"help": "CPUs of the local Ray instance"})
    results_dir: str = field(default=str(RESULTS), metadata={
        "help": "folder of the JSON / Markdown / PNG outputs"})
    name: str | None = field(default=None, metadata={
        "help": "file name stem of the outputs (default: forgetting, or forgetting_quick)"})
    work_dir: str | None = field(default=None, metadata={
        "help": "keep stores and windows here (default: a temporary folder, removed)"})

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        require(bool(self.methods) and not unknown, "methods",
                f"unknown {unknown}; choose from {METHODS}")
        require(len(set(self.methods)) == len(self.methods), "methods", "has duplicates")
        require(bool(self.seeds) and all(s >= 0 for s in self.seeds), "seeds",
                "needs at least one seed, each >= 0")
        require(self.replay_ratio > 0, "replay_ratio", "must be > 0 (methods switch it off)")
        require(self.distill_weight > 0, "distill_weight", "must be > 0")
        require(not self.fgm or FGM_BASE in self.methods, "fgm",
                f"compares against {FGM_BASE}, which must be among the methods")
        require(self.adv_epsilon > 0, "adv_epsilon", "must be > 0")
        require(all(e > 0 for e in self.attack_epsilons), "attack_epsilons", "must be > 0")
        require(self.pgd_steps >= 1, "pgd_steps", "must be >= 1")
        require(self.feed in FEEDS, "feed", f"must be one of {FEEDS}")
        require(0 < self.holdout_frac < 1, "holdout_frac", "must be in (0, 1)")
        require(self.num_workers >= 1, "num_workers", "must be >= 1")
        require(self.ray_cpus >= self.num_workers, "ray_cpus", "must be >= num_workers")

    def settings(self, method: str) -> dict[str, float]:
        """The IncrementalConfig knobs of one method."""
        on = {"replay": "replay" in method, "distill": "distill" in method}
        return {"replay_ratio": self.replay_ratio if on["replay"] else 0.0,
                "distill_weight": self.distill_weight if on["distill"] else 0.0,
                "adv_epsilon": self.adv_epsilon if method == FGM_METHOD else 0.0}

    def all_methods(self) -> list[str]:
        return list(self.methods) + ([FGM_METHOD] if self.fgm else [])


BENCH = ForgettingConfig()
QUICK = dataclasses.replace(BENCH, methods=("none", FGM_BASE), attack_epsilons=(0.5,))
# ~3000 interactions and 5000 transactions (5% fraud) per window; the shift at window 2.
SHOP = SyntheticShopConfig(n_users=600, n_items=300, new_items_per_window=30, n_windows=5,
                           interactions_per_window=3000, transactions_per_window=5000,
                           fraud_rate=0.05)
QUICK_SHOP = dataclasses.replace(SHOP, n_windows=2)  # the shift at window 1
TRAIN = TrainConfig(epochs=3, batch_size=128, device="cpu")
MODEL = ModelConfig(finetune_layers=0)


@dataclass(frozen=True)
class Setup:
    bench: ForgettingConfig
    shop: SyntheticShopConfig
    train: TrainConfig
    model: ModelConfig
    quick: bool


def seeded(setup: Setup, seed: int) -> tuple[SyntheticShopConfig, TrainConfig, ModelConfig]:
    return (dataclasses.replace(setup.shop, seed=seed),
            dataclasses.replace(setup.train, seed=seed),
            dataclasses.replace(setup.model, seed=seed))


def write_heads(sets: EvalSets, root: Path, shop: SyntheticShopConfig) -> None:
    """Each window without its scored tail, as a folder of windows (source=windows)."""
    for part in sets.slices:
        write_window(root, part.head, shop.freq, source="benchmarks/forgetting (head)")


def run_sequence(method: str, seed: int, setup: Setup, sets: EvalSets,
                 work: Path) -> dict[str, Any]:
    """Every window in order into a fresh store; each version scored right after."""
    from training.incremental import run_incremental
    from training.incremental_config import IncrementalConfig

    shop, train, model_cfg = seeded(setup, seed)
    bench = setup.bench
    tag = f"{method.replace('+', '_')}-seed{seed}"
    store = work / f"store-{tag}"
    head = bench.feed == "head"
    source, path = ("windows", str(work / f"windows-seed{seed}")) if head else ("synthetic", None)
    knobs = bench.settings(method)
    updates = []
    for t, part in enumerate(tqdm(sets.slices, desc=tag, unit="update")):
        inc = IncrementalConfig(
            source=source, path=path, window=part.window_id, store=str(store),
            storage_path=str(work / "ray"), trainer="ray", num_workers=bench.num_workers,
            use_gpu="false", holdout_frac=bench.holdout_frac, gate_tolerance=1.0,
            keep_last=len(sets.slices), use_best_config=False, replay_ratio=knobs["replay_ratio"],
            distill_weight=knobs["distill_weight"], adv_epsilon=knobs["adv_epsilon"])
        summary = run_incremental(inc, train, model_cfg, shop,
                                  explicit=frozenset(f.name for f in dataclasses.fields(train)))
        if summary["window"] != part.window_id or not summary["promoted"]:
            raise RuntimeError(f"{tag}: update {t} trained {summary['window']} "
                               f"(promoted={summary['promoted']}), expected {part.window_id}")
        version = load_version(str(store), summary["version"], work / "load" / tag)
        updates.append({
            "t": t, "window": part.window_id, "version": summary["version"],
            "seconds": summary["seconds"], "steps": summary["train"]["steps"],
            "eval": evaluate_version(version, sets, t, train.eval_k),
            "robustness": robustness(version, sets, t, shop.shift_at, bench.attack_epsilons,
                                     bench.pgd_steps, train.fraud_pos_weight)
            if bench.fgm and method in (FGM_BASE, FGM_METHOD) else None})
    return {"method": method, "seed": seed, "settings": bench.settings(method),
            "updates": updates}


def load_version(store: str, version: str, directory: Path) -> ShopStreamModel:
    open_store(store).load(version, directory / version)
    return load_model(directory / version)


def run_seed(seed: int, setup: Setup, work: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    shop, train, model_cfg = seeded(setup, seed)
    windows = generate(shop).windows
    sets = build_eval_sets(windows, setup.bench.holdout_frac, model_cfg.history_len,
                           train.eval_k)
    if setup.bench.feed == "head":
        write_heads(sets, work / f"windows-seed{seed}", shop)
    info = {"seed": seed, "shift_window": shop.shift_at, "windows": [
        {"window": p.window_id, "interactions": len(w.interactions),
         "transactions": len(w.transactions), "tail_interactions": len(p.tail.interactions),
         "tail_transactions": len(p.tail.transactions),
         "tail_frauds": int(p.tail.transactions["is_fraud"].sum()),
         "pool_items": len(p.pool), "popularity": p.popularity}
        for w, p in zip(windows, sets.slices)]}
    runs = [run_sequence(m, seed, setup, sets, work) for m in setup.bench.all_methods()]
    return info, runs


def start_ray(bench: ForgettingConfig) -> None:
    """A private local Ray on 127.0.0.1 (the env is set before ray is first imported)."""
    os.environ.update(RAY_ENV)
    import ray

    ray.init(address="local", num_cpus=bench.ray_cpus, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": RAY_ENV})


def run(setup: Setup) -> dict[str, Any]:
    began = time.perf_counter()
    torch.manual_seed(0)
    start_ray(setup.bench)
    import ray

    try:
        with tempfile.TemporaryDirectory(prefix="forgetting-") as tmp:
            work = Path(setup.bench.work_dir or tmp)
            results = [run_seed(seed, setup, work) for seed in setup.bench.seeds]
    finally:
        ray.shutdown()
    return {"benchmark": "forgetting", "mode": "quick" if setup.quick else "full",
            "config": {"bench": dataclasses.asdict(setup.bench),
                       "shop": dataclasses.asdict(setup.shop),
                       "train": dataclasses.asdict(setup.train),
                       "model": dataclasses.asdict(setup.model)},
            "seeds": [info for info, _ in results],
            "runs": [r for _, runs in results for r in runs],
            "seconds": round(time.perf_counter() - began, 1),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "torch": torch.__version__}}


def write_outputs(result: dict[str, Any], directory: Path, name: str
                  ) -> tuple[list[Path], str]:
    """JSON (raw + summaries), Markdown and PNG; returns (paths, the printed table)."""
    directory.mkdir(parents=True, exist_ok=True)
    full = {**result, "summary": aggregate(result), "robustness": robustness_summary(result),
            "noise_floor": noise_floor(result), "comparisons": comparisons(result)}
    paths = [directory / f"{name}.json", directory / f"{name}.md", directory / f"{name}.png"]
    paths[0].write_text(json.dumps(json_safe(full), indent=1, allow_nan=False) + "\n")
    paths[1].write_text(markdown(result, name))
    plot(result, paths[2])
    table = text_table(*main_table(result, short=True))
    table += "\n\nnoise floor (update 0, identical settings): " + json.dumps(
        json_safe(noise_floor(result)))
    r_header, r_rows = robustness_table(result)
    if r_rows:
        table += "\n\nfraud AUC-PR on the next window (clean / under attack):\n"
        table += text_table(r_header, r_rows)
    return paths, table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/forgetting.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 windows (shift at 1), methods none and replay+distill (+fgm), "
                             "one attack radius: a few minutes")
    add_dataclass_args(parser, ForgettingConfig)
    add_dataclass_args(parser, SyntheticShopConfig, prefix="synth-")
    add_dataclass_args(parser, TrainConfig, prefix="train-")
    add_dataclass_args(parser, ModelConfig, prefix="model-")
    return parser


def parse_setup(argv: list[str] | None) -> Setup:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return Setup(
            bench=dataclass_from_args(ForgettingConfig, args, base=QUICK if args.quick
                                      else BENCH),
            shop=dataclass_from_args(SyntheticShopConfig, args, prefix="synth-",
                                     base=QUICK_SHOP if args.quick else SHOP),
            train=dataclass_from_args(TrainConfig, args, prefix="train-", base=TRAIN),
            model=dataclass_from_args(ModelConfig, args, prefix="model-", base=MODEL),
            quick=bool(args.quick))
    except ConfigError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    setup = parse_setup(argv)
    setup_logging()
    result = run(setup)
    name = setup.bench.name or ("forgetting_quick" if setup.quick else "forgetting")
    paths, table = write_outputs(result, Path(setup.bench.results_dir), name)
    print(table)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
