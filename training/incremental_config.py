"""Settings of an incremental update, and how a sweep's best config feeds into it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from training.cli import config_from_dict, require
from training.config import TrainConfig
from training.data.sources import SOURCES, check_source
from training.store import CheckpointStore

logger = logging.getLogger(__name__)

BEST_CONFIG = "best"
TRAINERS = ("auto", "ray", "local")
# Fraud decision targets on the held-out tail: review and decline false-positive rates.
REVIEW_FPR = 0.05
DECLINE_FPR = 0.005


# Ranking-time terms tried on each update's held-out tail (training/update/ranking_terms.py), in
# cosine units before the temperature, half-decade steps. Count weight: 0 (the model's
# order) to 10 per log purchase (counts outweigh the towers' whole range of 2). Bonus: 0 to
# 100, which puts own items ahead of every other item even at weight 10 (log counts stay
# under 10): so both ends of the blend, the model alone and repeat-then-popular's order
# with the model breaking its ties, are in the grid.
REPEAT_BONUS_GRID: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
COUNT_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class IncrementalConfig:
    """Where the new window and the store are, the workers, and the continual-learning knobs."""

    source: str = field(default="synthetic", metadata={"help": f"data source: {SOURCES}"})
    path: str | None = field(default=None, metadata={
        "help": "file or folder of the source (a folder of windows for source=windows)"})
    freq: str = field(default="week", metadata={
        "help": "window length when splitting a real source: hour, day, week or month"})
    window: str | None = field(default=None, metadata={
        "help": "id of the window to train on (default: the first one after latest's)"})
    store: str = field(default="runs/store", metadata={
        "help": "checkpoint store: a local directory or s3://bucket/prefix"})
    endpoint_url: str | None = field(default=None, metadata={
        "help": "S3 endpoint (MinIO, moto); default: AWS_ENDPOINT_URL or AWS"})
    ray_address: str | None = field(default=None, metadata={
        "help": "Ray cluster address (default: RAY_ADDRESS, else a local Ray)"})
    trainer: str = field(default="auto", metadata={
        "help": "auto: ray when the update is big enough to repay Ray Train's start-up "
                "(see ray_min_steps), needs GPUs or mid-run checkpoints, else local; ray: "
                "Ray Train TorchTrainer across num_workers; local: this process, one worker, "
                "no Ray Train start-up"})
    ray_min_steps: int = field(default=400, metadata={
        "help": "trainer=auto: the fewest one-process optimizer steps (all epochs) for which "
                "the update runs on Ray Train (see docs/trainer.md)"})
    num_workers: int = field(default=2, metadata={"help": "Ray Train workers (DDP ranks)"})
    use_gpu: str = field(default="auto", metadata={
        "help": "auto (GPUs when Ray sees them), true or false"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs reserved per worker"})
    storage_path: str = field(default="runs/ray", metadata={
        "help": "Ray Train run storage for mid-run checkpoints: a directory or s3://bucket/path"})
    max_failures: int = field(default=2, metadata={
        "help": "worker-group failures survived by resuming from the last checkpoint"})
    review_fpr: float = field(default=REVIEW_FPR, metadata={
        "help": "fraud review threshold: this false-positive rate on the held-out tail"})
    review_rate: float = field(default=0.0, metadata={
        "help": "fraud review threshold from an alert budget instead: this share of all "
                "transactions goes to review (e.g. 0.01; needs no labels); 0: review_fpr"})
    decline_fpr: float = field(default=DECLINE_FPR, metadata={
        "help": "fraud decline threshold: this false-positive rate on the held-out tail"})
    start_retries: int = field(default=5, metadata={
        "help": "failed starts of the Ray Train worker group (each waits "
                "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default, for its CPUs/GPUs) "
                "before the update fails; -1: wait forever (an autoscaling cluster)"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "also checkpoint every N steps (0: only at the end)"})
    replay_ratio: float = field(default=0.3, metadata={
        "help": "replayed rows mixed in, as a fraction of the new window's rows (0: off)"})
    replay_capacity: int = field(default=20000, metadata={
        "help": "rows kept per table in the replay reservoir"})
    distill_weight: float = field(default=0.5, metadata={
        "help": "weight of distillation from the previous version (0: off)"})
    distill_temperature: float = field(default=2.0, metadata={"help": "distillation temperature"})
    adv_epsilon: float = field(default=0.0, metadata={
        "help": "FGM/PGD radius on fraud features in std units (0: off, the default)"})
    adv_steps: int = field(default=1, metadata={"help": "1 = FGM, >1 = PGD steps"})
    label_delay: int = field(default=0, metadata={
        "help": "windows until fraud labels arrive: the update at window t learns, replays "
                "and gates fraud on the transactions of window t - delay (rec learns window t "
                "at once). 0: labels at once (optimistic). Realistic: the chargeback delay, "
                "e.g. 1 with weekly windows (docs/fraud.md)"})
    holdout_frac: float = field(default=0.2, metadata={
        "help": "tail of the window (by time) held out for the promotion gate"})
    carry_holdout: bool = field(default=True, metadata={
        "help": "also train on the previous version's held-out tail (its gate slice), "
                "so no row of the stream is left untrained"})
    gate_replay: bool = field(default=False, metadata={
        "help": "also score the gate on a replay sample of earlier windows (off: the "
                "incumbent has trained on every replayed row, so that slice favours it and "
                "rejected most real updates; the held-out tail is unseen by both)"})
    gate_tolerance: float = field(default=0.01, metadata={
        "help": "largest allowed absolute drop of any task's main metric vs latest"})
    repeat_bonus_grid: tuple[float, ...] = field(default=REPEAT_BONUS_GRID, metadata={
        "help": "ranking-time bonuses (cosine units) of a user's own past items tried on "
                "the held-out tail; the candidate ranks with the best (comma list; empty: "
                "keep the parent's terms, see training/update/ranking_terms.py)"})
    count_weight_grid: tuple[float, ...] = field(default=COUNT_WEIGHT_GRID, metadata={
        "help": "ranking-time weights of repeat-then-popular's purchase counts tried with "
                "each bonus (comma list; empty: keep the parent's terms)"})
    keep_last: int = field(default=5, metadata={"help": "published versions kept"})
    on_reject: str = field(default="advance", metadata={
        "help": "after a rejected candidate: advance (serving keeps latest, but the next "
                "update resumes from the rejected candidate, whose state has seen every "
                "window so far) or hold (the next update resumes from latest again)"})
    fallback_after: int = field(default=2, metadata={
        "help": "after this many incremental candidates in a row were rejected, the next "
                "update is a full retrain from the pretrained encoder on all windows so "
                "far, gated the same way (0: never)"})
    full_retrain: bool = field(default=False, metadata={
        "help": "every update is a full retrain from the pretrained encoder on all windows "
                "so far (the newest window's held-out tail stays out), gated and published "
                "like an incremental one: what the fallback runs, and the pipeline's "
                "full_retrain arm"})
    use_best_config: bool = field(default=True, metadata={
        "help": "start from the store's configs/best.json when present"})
    inject_failure_at_step: int | None = field(default=None, metadata={
        "help": "testing: a worker raises once at this step (needs the marker path)"})
    inject_failure_marker: str | None = field(default=None, metadata={
        "help": "testing: file that records the injected failure so it happens once"})

    def __post_init__(self) -> None:
        check_source(self.source, self.freq)
        require(self.trainer in TRAINERS, "trainer",
                f"must be one of {TRAINERS}, got {self.trainer!r}")
        require(self.ray_min_steps >= 0, "ray_min_steps",
                f"must be >= 0, got {self.ray_min_steps}")
        require(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.use_gpu in ("auto", "true", "false"), "use_gpu",
                f"must be auto, true or false, got {self.use_gpu!r}")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        require(self.max_failures >= -1, "max_failures", "must be >= -1")
        require(self.start_retries >= -1, "start_retries", "must be >= -1")
        require(0 < self.review_fpr < 1, "review_fpr", f"must be in (0, 1), got {self.review_fpr}")
        require(0 <= self.review_rate < 1, "review_rate",
                f"must be in [0, 1), got {self.review_rate}")
        require(0 < self.decline_fpr <= self.review_fpr, "decline_fpr",
                f"must be in (0, review_fpr={self.review_fpr}], got {self.decline_fpr}")
        require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        require(self.replay_ratio >= 0, "replay_ratio", "must be >= 0")
        require(self.replay_capacity >= 1, "replay_capacity", "must be >= 1")
        require(self.distill_weight >= 0, "distill_weight", "must be >= 0")
        require(self.distill_temperature > 0, "distill_temperature", "must be > 0")
        require(self.adv_epsilon >= 0, "adv_epsilon", "must be >= 0")
        require(self.adv_steps >= 1, "adv_steps", "must be >= 1")
        require(self.label_delay >= 0, "label_delay", f"must be >= 0, got {self.label_delay}")
        require(0 < self.holdout_frac < 1, "holdout_frac", "must be in (0, 1)")
        require(self.gate_tolerance >= 0, "gate_tolerance", "must be >= 0")
        require(all(0.0 <= b <= 1000.0 for b in self.repeat_bonus_grid), "repeat_bonus_grid",
                f"values must be in [0, 1000], got {list(self.repeat_bonus_grid)}")
        require(all(0.0 <= w <= 100.0 for w in self.count_weight_grid), "count_weight_grid",
                f"values must be in [0, 100], got {list(self.count_weight_grid)}")
        require(self.keep_last >= 1, "keep_last", "must be >= 1")
        require(self.on_reject in ("advance", "hold"), "on_reject",
                f"must be advance or hold, got {self.on_reject!r}")
        require(self.fallback_after >= 0, "fallback_after",
                f"must be >= 0, got {self.fallback_after}")
        require((self.inject_failure_at_step is None) == (self.inject_failure_marker is None),
                "inject_failure_at_step", "needs inject_failure_marker too (and vice versa)")

    def public_dict(self) -> dict[str, Any]:
        """Settings recorded in a version's meta (no endpoints: they can carry hosts)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("endpoint_url", "ray_address")}


# Fields of IncrementalConfig a sweep may tune (the rest say where data and stores are).
TUNABLE_INCREMENTAL = ("replay_ratio", "distill_weight", "distill_temperature",
                       "adv_epsilon")


def explicit_settings(args: argparse.Namespace) -> frozenset[str]:
    """The training and update settings given on the command line. One rule for every entry
    point: a flag given beats ``configs/best.json``, which beats the default (parsers built
    with :func:`training.cli.add_dataclass_args` leave a flag not given out of ``args``)."""
    fields = set(TrainConfig.__dataclass_fields__) | set(IncrementalConfig.__dataclass_fields__)
    return frozenset(k for k in vars(args) if k in fields)


def apply_best_config(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                      explicit: frozenset[str]
                      ) -> tuple[TrainConfig, IncrementalConfig, str]:
    """Overlay ``configs/best.json`` under the explicitly given flags.

    The file's ``train_config`` entries are TrainConfig fields, its
    ``incremental_config`` entries tunable IncrementalConfig fields.
    """
    if not inc.use_best_config:
        return train_cfg, inc, "flags/defaults (best config disabled)"
    best = store.get_config(BEST_CONFIG)
    if not best:
        return train_cfg, inc, "flags/defaults (no configs/best.json)"
    train_best = dict(best.get("train_config", {}))
    inc_best = {k: v for k, v in dict(best.get("incremental_config", {})).items()
                if k in TUNABLE_INCREMENTAL}
    tuned = {k: v for k, v in train_best.items() if k not in explicit}
    if tuned.get("epoch_schedule"):  # a flag given explicitly holds for every epoch
        tuned["epoch_schedule"] = [{k: v for k, v in dict(entry).items() if k not in explicit}
                                   for entry in tuned["epoch_schedule"]]
    tuned_inc = {k: v for k, v in inc_best.items() if k not in explicit}
    merged = config_from_dict(TrainConfig, {**dataclasses.asdict(train_cfg), **tuned})
    merged_inc = dataclasses.replace(inc, **tuned_inc)
    label = f"configs/best.json (sweep {best.get('sweep_id', '?')})"
    overridden = sorted(explicit & (set(train_best) | set(inc_best)))
    if overridden:
        label += f" overridden by flags {overridden}"
    logger.info("using %s: %s %s", label, tuned, tuned_inc)
    return merged, merged_inc, label
