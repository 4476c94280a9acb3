"""Epoch schedules (a PBT sweep's result): validation, their JSON round trip through the
configs, the sweep's best.json, and flags that override them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from training.cli import ConfigError, config_from_dict
from training.config import TrainConfig
from training.epoch_schedule import normalize_schedule, schedule_json
from training.incremental_config import IncrementalConfig, apply_best_config
from training.store import LocalStore
from tuning.report import TrialRow, best_config_doc

pytestmark = pytest.mark.unit

SCHEDULE = [{"lr": 0.002, "alpha_fraud": 1.0}, {"lr": 0.0024, "alpha_fraud": 0.8}]


def test_a_schedule_survives_json_and_ray_as_the_same_config() -> None:
    cfg = TrainConfig(epoch_schedule=SCHEDULE)  # type: ignore[arg-type]
    assert schedule_json(cfg.epoch_schedule) == SCHEDULE
    through_json = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert config_from_dict(TrainConfig, through_json) == cfg
    assert config_from_dict(TrainConfig, dataclasses.asdict(cfg)) == cfg
    assert TrainConfig().epoch_schedule == () and normalize_schedule(None) == ()


@pytest.mark.parametrize(("schedule", "needle"), [
    ([{"epochs": 3}], r"epoch_schedule\[0\]\.epochs: not a per-epoch setting"),
    ([{"lr": 0.1}, {"lr": 0.0}], r"epoch_schedule\[1\]\.lr: must be a finite number"),
    ([{"alpha_rec": float("nan")}], r"epoch_schedule\[0\]\.alpha_rec"),
    ([{"lr": True}], r"epoch_schedule\[0\]\.lr"),
    ({"lr": 0.1}, "expected a list"),
])
def test_bad_schedules_name_the_epoch_and_key(schedule: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(epoch_schedule=schedule)  # type: ignore[arg-type]


def _row(schedule: list[dict[str, float]]) -> TrialRow:
    # PBT's last perturbation left lr 0.0024 and distill_weight 0.3 in the trial's config.
    return TrialRow("t1", {"lr": 0.0024, "alpha_fraud": 0.8, "distill_weight": 0.3},
                    {"score": 0.5, "rec_ndcg": 0.4, "fraud_auc_pr": 0.6}, epochs=2,
                    schedule=schedule)


def test_best_json_holds_the_schedule_and_its_first_epochs_values() -> None:
    schedule = [{**e, "distill_weight": 0.5 - 0.2 * i} for i, e in enumerate(SCHEDULE)]
    info = {"max_epochs": 2, "metric": "score", "sweep_id": "s1"}
    doc = best_config_doc(_row(schedule), [], [], ["lr", "alpha_fraud"], ["distill_weight"],
                          info)
    assert doc["train_config"] == {"lr": 0.002, "alpha_fraud": 1.0, "epochs": 2,
                                   "epoch_schedule": schedule}
    assert doc["incremental_config"] == {"distill_weight": 0.5}
    plain = best_config_doc(_row([]), [], [], ["lr", "alpha_fraud"], ["distill_weight"], info)
    assert plain["train_config"] == {"lr": 0.0024, "alpha_fraud": 0.8, "epochs": 2}


def test_the_next_update_replays_the_schedule_except_explicit_flags(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_config("best", {"sweep_id": "s1", "train_config": {
        "lr": 0.002, "alpha_fraud": 1.0, "epochs": 2, "epoch_schedule": SCHEDULE}})
    train, _, label = apply_best_config(store, IncrementalConfig(), TrainConfig(), frozenset())
    assert schedule_json(train.epoch_schedule) == SCHEDULE and "best.json" in label
    train, _, label = apply_best_config(store, IncrementalConfig(), TrainConfig(lr=0.01),
                                        frozenset({"lr"}))
    assert train.lr == 0.01 and "overridden by flags ['lr']" in label
    assert schedule_json(train.epoch_schedule) == [{"alpha_fraud": 1.0}, {"alpha_fraud": 0.8}]
