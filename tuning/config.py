"""Settings of a Ray Tune sweep (what is searched lives in :mod:`tuning.space`).

Where the data and the store are, and the continual-learning settings that are not
searched, come from :class:`training.incremental_config.IncrementalConfig` and the base
:class:`training.config.TrainConfig`: the sweep tunes exactly the update
``training.incremental`` will run. No field here shares a name with those two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from training.cli import ConfigError, require
from training.incremental_config import IncrementalConfig

Scheduler = Literal["asha", "pbt"]
Search = Literal["random", "optuna"]
Backend = Literal["loop", "ray_train"]
Metric = Literal["score", "rec_ndcg", "fraud_auc_pr"]
METRICS: tuple[str, ...] = ("score", "rec_ndcg", "fraud_auc_pr")
# A ray_train trial only coordinates its TorchTrainer; the Train workers hold the CPUs.
RAY_TRAIN_TRIAL_CPU = 0.1


@dataclass(frozen=True)
class SweepConfig:
    """How many trials, how they are scheduled and scored, and where results go."""

    name: str | None = field(default=None, metadata={
        "help": "sweep id = Tune experiment name (default: sweep-<UTC time>-<random>)"})
    results_path: str = field(default="runs/tune", metadata={
        "help": "Tune storage (trial logs, TensorBoard files, checkpoints, plot): "
                "a directory or s3://bucket/path"})
    num_samples: int = field(default=8, metadata={"help": "trials (sampled configs)"})
    scheduler: Scheduler = field(default="asha", metadata={
        "help": "asha (stop weak trials early) or pbt (population based training: mutate "
                "--pbt-mutate over time from the best trials' checkpoints)"})
    search: Search = field(default="random", metadata={
        "help": "random, or optuna (TPE; needs the tune-optuna extra; not with pbt)"})
    search_seed: int = field(default=0, metadata={"help": "seed of the search algorithm"})
    metric: Metric = field(default="score", metadata={
        "help": "what is maximised: score (rec_weight*NDCG@k + fraud_weight*AUC-PR on the "
                "next window), rec_ndcg or fraud_auc_pr"})
    rec_weight: float = field(default=0.5, metadata={
        "help": "weight of next-window recommendation NDCG@k in the score"})
    fraud_weight: float = field(default=0.5, metadata={
        "help": "weight of next-window fraud AUC-PR in the score"})
    max_epochs: int = field(default=3, metadata={
        "help": "epochs per trial (the horizon of the learning-rate schedule); a score is "
                "reported after each"})
    grace_period: int = field(default=1, metadata={
        "help": "ASHA: epochs every trial runs before it can be stopped"})
    reduction_factor: int = field(default=2, metadata={
        "help": "ASHA: keep the top 1/reduction_factor of trials at each rung"})
    perturbation_interval: int = field(default=1, metadata={
        "help": "PBT: epochs between exploit/explore steps"})
    pbt_synch: bool = field(default=False, metadata={
        "help": "PBT: perturb the whole population together at each interval (every "
                "trial pauses until the slowest catches up; exploits do not depend on "
                "which trial reports first)"})
    pbt_mutate: tuple[str, ...] = field(default=("lr", "alpha_fraud"), metadata={
        "help": "PBT: comma-separated searched keys it perturbs over time"})
    trial_backend: Backend = field(default="loop", metadata={
        "help": "loop: one process per trial running training.fit.engine.run_epochs (reports "
                "every epoch); ray_train: each trial fits a TorchTrainer with --num-workers "
                "(reports once, at the end)"})
    cpus_per_trial: float = field(default=1.0, metadata={
        "help": "loop backend: CPUs reserved per trial (ray_train trials take 0.1 and "
                "their Train workers take --cpus-per-worker each)"})
    gpus_per_trial: float = field(default=0.0, metadata={
        "help": "loop backend: GPUs per trial (fractions share a GPU)"})
    max_concurrent_trials: int = field(default=0, metadata={
        "help": "trials running at once (0: as many as the resources allow)"})
    space_file: str | None = field(default=None, metadata={
        "help": "JSON file overriding search-space dimensions (see tuning/space.py)"})
    report_dir: str | None = field(default=None, metadata={
        "help": "where sweep.png and sweep_summary.json go (default: the experiment folder "
                "under a local results_path, else runs/tune-reports/<sweep id>)"})
    write_best: bool = field(default=True, metadata={
        "help": "write the best config to the store as configs/best.json"})

    def __post_init__(self) -> None:
        require(self.name is None or (bool(self.name) and "/" not in self.name), "name",
                f"must be a plain folder name, got {self.name!r}")
        require(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        require(self.scheduler in ("asha", "pbt"), "scheduler",
                f"must be asha or pbt, got {self.scheduler!r}")
        require(self.search in ("random", "optuna"), "search",
                f"must be random or optuna, got {self.search!r}")
        require(self.metric in METRICS, "metric", f"must be one of {METRICS}, got "
                f"{self.metric!r} (the trials report only these)")
        require(self.rec_weight >= 0 and self.fraud_weight >= 0, "rec_weight/fraud_weight",
                "must be >= 0")
        require(self.rec_weight + self.fraud_weight > 0, "rec_weight/fraud_weight",
                "at least one must be > 0")
        require(self.max_epochs >= 1, "max_epochs", f"must be >= 1, got {self.max_epochs}")
        require(1 <= self.grace_period <= self.max_epochs, "grace_period",
                f"must be in [1, max_epochs={self.max_epochs}], got {self.grace_period}")
        require(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        require(self.perturbation_interval >= 1, "perturbation_interval", "must be >= 1")
        require(self.trial_backend in ("loop", "ray_train"), "trial_backend",
                f"must be loop or ray_train, got {self.trial_backend!r}")
        require(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")
        require(self.gpus_per_trial >= 0, "gpus_per_trial", "must be >= 0")
        require(self.max_concurrent_trials >= 0, "max_concurrent_trials", "must be >= 0")
        if self.scheduler == "pbt":
            self._check_pbt()

    def _check_pbt(self) -> None:
        require(self.search == "random", "search",
                "pbt explores by itself; Tune refuses a search algorithm with it")
        require(self.num_samples >= 2, "num_samples", "pbt needs a population of >= 2")
        require(self.perturbation_interval < self.max_epochs, "perturbation_interval",
                f"must be < max_epochs={self.max_epochs}, or pbt never perturbs")
        require(bool(self.pbt_mutate), "pbt_mutate", "pbt needs at least one key to mutate")
        require(self.trial_backend == "loop", "trial_backend",
                "pbt needs the loop backend (per-epoch scores and checkpoints)")

    @property
    def checkpoints(self) -> bool:
        """Trials checkpoint every epoch only where something resumes from them (PBT)."""
        return self.scheduler == "pbt"


def ray_train_concurrency(cpus: float, gpus: float, inc: IncrementalConfig, use_gpu: bool,
                          cap: int) -> int:
    """ray_train trials that can run at once: each holds 0.1 CPU plus its Train workers'
    ``num_workers x cpus_per_worker`` CPUs (and ``num_workers`` GPUs with use_gpu). Capping
    here matters: unlimited 0.1-CPU trials would take every CPU and starve their workers."""
    fits = math.floor((cpus + 1e-9) / (RAY_TRAIN_TRIAL_CPU + inc.scaling.num_workers
                                       * inc.scaling.cpus_per_worker))
    if use_gpu:
        fits = min(fits, math.floor((gpus + 1e-9) / inc.scaling.num_workers))
    if fits < 1:
        raise ConfigError(f"num_workers: {inc.scaling.num_workers} Train workers x "
                          f"{inc.scaling.cpus_per_worker} CPU{' + 1 GPU' if use_gpu else ''} each "
                          f"(+{RAY_TRAIN_TRIAL_CPU} CPU for the trial) do not fit the "
                          f"cluster's {cpus:g} CPUs / {gpus:g} GPUs")
    return min(fits, cap) if cap else fits
