"""One rule for settings on every entry point (#12): a flag given beats configs/best.json,
which beats the default — in ``python -m training.incremental`` and in the pipeline's arm
for ours alike; the ablation arm never follows best.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.comparison.arms import ALL_SETTINGS, NO_REPLAY, OURS, IncrementalArm, build_arms
from cluster.pipeline import build_parser
from training.config import TrainConfig
from training.incremental_config import (
    BEST_CONFIG,
    IncrementalConfig,
    apply_best_config,
    explicit_settings,
)
from training.model import ModelConfig
from training.stage_args import training_parser
from training.store import LocalStore

pytestmark = pytest.mark.unit

ARGV = ["--lr", "0.01", "--replay-ratio", "0.3", "--store", "runs/x"]


def test_both_entry_points_read_the_same_flags_as_given() -> None:
    incremental = training_parser("python -m training.incremental", "", IncrementalConfig)
    from_update = explicit_settings(incremental.parse_args(ARGV))
    from_pipeline = explicit_settings(build_parser().parse_args([*ARGV, "--once"]))
    assert from_update == from_pipeline == {"lr", "replay_ratio", "store"}
    assert explicit_settings(incremental.parse_args([])) == frozenset()


def test_a_flag_beats_best_json_which_beats_the_default(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_config(BEST_CONFIG, {"sweep_id": "s1",
                                   "train_config": {"lr": 0.5, "epochs": 3},
                                   "incremental_config": {"replay_ratio": 0.9,
                                                          "distill_weight": 0.2}})
    train, inc, label = apply_best_config(store, IncrementalConfig.of(replay_ratio=0.3),
                                          TrainConfig(lr=0.01),
                                          frozenset({"lr", "replay_ratio"}))
    assert (train.lr, inc.continual.replay_ratio) == (0.01, 0.3)  # the flags
    assert (train.epochs, inc.continual.distill_weight) == (3, 0.2)  # best.json over the defaults
    assert train.batch_size == TrainConfig().batch_size  # neither: the default
    assert "overridden by flags ['lr', 'replay_ratio']" in label


def test_the_pipeline_arms_take_the_flags_and_the_ablation_takes_none(tmp_path: Path) -> None:
    inc = IncrementalConfig.of(store=str(tmp_path / "store"))
    arms = build_arms((OURS, NO_REPLAY), inc, inc, TrainConfig(), ModelConfig(),
                      frozenset({"lr"}))
    ours, plain = arms[OURS], arms[NO_REPLAY]
    assert isinstance(ours, IncrementalArm) and isinstance(plain, IncrementalArm)
    assert ours.explicit == {"lr"}
    assert plain.explicit == ALL_SETTINGS and {"lr", "replay_ratio", "epochs"} <= ALL_SETTINGS
