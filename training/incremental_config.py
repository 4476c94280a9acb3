"""Settings of an incremental update, and how a sweep's best config feeds into it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from training.cli import config_from_dict, leaf_settings, require, with_settings
from training.config import TrainConfig
from training.data.source_config import SourceConfig
from training.scaling_config import ScalingConfig
from training.store import CheckpointStore
from training.store.config import StoreConfig

logger = logging.getLogger(__name__)

BEST_CONFIG = "best"
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
class ContinualConfig:
    """How an update learns the new window and whether it may replace the live version:
    replay, distillation, label delay, the gate, the ranking-time grids, the staleness
    policy and the fraud decision targets."""

    review_fpr: float = field(default=REVIEW_FPR, metadata={
        "help": "fraud review threshold: this false-positive rate on the held-out tail"})
    review_rate: float = field(default=0.0, metadata={
        "help": "fraud review threshold from an alert budget instead: this share of all "
                "transactions goes to review (e.g. 0.01; needs no labels); 0: review_fpr"})
    decline_fpr: float = field(default=DECLINE_FPR, metadata={
        "help": "fraud decline threshold: this false-positive rate on the held-out tail"})
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
                "e.g. 1 with weekly windows; a transaction's label_ts brings its label "
                "sooner (docs/fraud.md)"})
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

    def __post_init__(self) -> None:
        require(0 < self.review_fpr < 1, "review_fpr", f"must be in (0, 1), got {self.review_fpr}")
        require(0 <= self.review_rate < 1, "review_rate",
                f"must be in [0, 1), got {self.review_rate}")
        require(0 < self.decline_fpr <= self.review_fpr, "decline_fpr",
                f"must be in (0, review_fpr={self.review_fpr}], got {self.decline_fpr}")
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
        require(self.on_reject in ("advance", "hold"), "on_reject",
                f"must be advance or hold, got {self.on_reject!r}")
        require(self.fallback_after >= 0, "fallback_after",
                f"must be >= 0, got {self.fallback_after}")


@dataclass(frozen=True)
class IncrementalConfig:
    """One update's settings, composed: where the windows come from, the store, how the
    training runs, and how it learns (each part validated in its own config)."""

    source: SourceConfig = field(default_factory=SourceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    window: str | None = field(default=None, metadata={
        "help": "id of the window to train on (default: the first one after latest's)"})

    @classmethod
    def of(cls, **settings: Any) -> IncrementalConfig:
        """From flat settings named like their flags (``store=``, ``trainer=``,
        ``replay_ratio=``), as the command line builds it (training.cli.with_settings)."""
        return with_settings(cls(), **settings)

    def with_settings(self, **settings: Any) -> IncrementalConfig:
        """A copy with flat settings changed (see :meth:`of`)."""
        return with_settings(self, **settings)

    def public_dict(self) -> dict[str, Any]:
        """Settings recorded in a version's meta (no endpoints: they can carry hosts)."""
        out = dataclasses.asdict(self)
        out["store"].pop("endpoint_url", None)
        out["scaling"].pop("ray_address", None)
        return out


# Fields of ContinualConfig a sweep may tune (the rest say where data and stores are).
TUNABLE_INCREMENTAL = ("replay_ratio", "distill_weight", "distill_temperature",
                       "adv_epsilon")


def explicit_settings(args: argparse.Namespace) -> frozenset[str]:
    """The training and update settings given on the command line. One rule for every entry
    point: a flag given beats ``configs/best.json``, which beats the default (parsers built
    with :func:`training.cli.add_dataclass_args` leave a flag not given out of ``args``)."""
    fields = leaf_settings(TrainConfig) | leaf_settings(IncrementalConfig)
    return frozenset(k for k in vars(args) if k in fields)


def apply_best_config(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                      explicit: frozenset[str]
                      ) -> tuple[TrainConfig, IncrementalConfig, str]:
    """Overlay ``configs/best.json`` under the explicitly given flags.

    The file's ``train_config`` entries are TrainConfig fields, its
    ``incremental_config`` entries tunable ContinualConfig fields (flat names).
    """
    if not inc.continual.use_best_config:
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
    merged_inc = dataclasses.replace(
        inc, continual=dataclasses.replace(inc.continual, **tuned_inc))
    label = f"configs/best.json (sweep {best.get('sweep_id', '?')})"
    overridden = sorted(explicit & (set(train_best) | set(inc_best)))
    if overridden:
        label += f" overridden by flags {overridden}"
    logger.info("using %s: %s %s", label, tuned, tuned_inc)
    return merged, merged_inc, label
