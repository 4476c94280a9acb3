"""Sweep settings fail early and by name; the report's pure parts compute exact results."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.cli import ConfigError
from training.config import TrainConfig
from training.incremental_config import TUNABLE_INCREMENTAL, IncrementalConfig
from training.store import LocalStore
from training.store.meta import dump_json
from tuning.config import SweepConfig, ray_train_concurrency
from tuning.report import (
    MetricNotReportedError,
    TrialRow,
    best_config_doc,
    best_row,
    combined_score,
    finalists,
    format_table,
    pareto_front,
    trial_id_of,
)
from tuning.snapshot import ReadOnlySnapshotError, snapshot_latest
from tuning.space import (
    Dim,
    EmptySearchSpaceError,
    SearchSpace,
    SearchSpaceError,
    UnknownSearchKeyError,
    loguniform,
    uniform,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def row(trial: str, rec: float, fraud: float, **params: object) -> TrialRow:
    return TrialRow(trial, dict(params), {"rec_ndcg": rec, "fraud_auc_pr": fraud,
                                          "score": combined_score(rec, fraud, 0.5, 0.5)}, 2)


# ---- search space --------------------------------------------------------------------------

def test_default_space_searches_the_issue_keys_and_each_names_a_real_setting() -> None:
    space = SearchSpace()
    assert sorted(space.dims()) == ["alpha_fraud", "distill_weight", "lr", "replay_ratio",
                                    "schedule", "warmup_frac"]
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(k in train_fields or k in TUNABLE_INCREMENTAL for k in SearchSpace.keys())
    assert space.train_keys() == ["alpha_fraud", "lr", "warmup_frac", "schedule"]
    assert space.incremental_keys() == ["distill_weight", "replay_ratio"]
    assert space.schedule == Dim("choice", values=("constant", "linear", "cosine"))
    assert space.alpha_fraud == loguniform(0.1, 10.0) and space.alpha_rec is None


def test_empty_space_fails_naming_the_searchable_keys() -> None:
    off = {k: None for k in SearchSpace.keys()}
    with pytest.raises(EmptySearchSpaceError, match="every dimension is off.*alpha_fraud"):
        SearchSpace(**off)
    with pytest.raises(EmptySearchSpaceError):
        SearchSpace.from_dict(off)


def test_unknown_key_fails_naming_it() -> None:
    with pytest.raises(UnknownSearchKeyError, match="^learning_rate: not a field of TrainConfig"):
        SearchSpace.from_dict({"learning_rate": {"loguniform": [1e-4, 1e-2]}})
    # A real TrainConfig field that the typed space does not declare is refused too.
    with pytest.raises(UnknownSearchKeyError, match="^epochs: a real setting, but not searchable"):
        SearchSpace.from_dict({"epochs": {"choice": [1, 2]}})
    assert issubclass(UnknownSearchKeyError, ConfigError)


@pytest.mark.parametrize(("values", "match"), [
    ({"warmup_frac": {"uniform": [0.0, 1.0]}}, "^warmup_frac: the space reaches 1.0"),
    ({"lr": {"loguniform": [0.0, 0.1]}}, "^lr: loguniform needs low > 0"),
    ({"lr": {"uniform": [0.1, 0.01]}}, r"^lr: needs finite low < high, got \[0.1, 0.01\]"),
    ({"schedule": {"choice": ["cosine", "exponential"]}}, "^schedule: the space reaches "
                                                          "'exponential'"),
    ({"schedule": {"choice": []}}, "^schedule: a choice needs distinct values"),
    ({"replay_ratio": {"uniform": [-0.5, 0.5]}}, "^replay_ratio: the space reaches -0.5"),
    ({"lr": [1e-4, 1e-2]}, "^lr: expected"),
    ({"lr": {"normal": [0, 1]}}, "^lr: cannot read"),
])
def test_bad_dimension_fails_naming_the_key(values: dict[str, object], match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        SearchSpace.from_dict(values)


def test_json_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lr": {"loguniform": [1e-4, 3e-2]}, "replay_ratio": None,
                                "weight_decay": {"uniform": [0.0, 0.1]}}))
    space = SearchSpace.from_file(path)
    assert space.lr == loguniform(1e-4, 3e-2)
    assert space.replay_ratio is None
    assert space.weight_decay == uniform(0.0, 0.1)
    assert space.incremental_keys() == ["distill_weight"]
    assert SearchSpace.from_dict(space.to_json()) == space
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SearchSpaceError, match="^space_file: .*must hold a JSON object"):
        SearchSpace.from_file(tmp_path / "bad.json")


def test_flags_may_not_set_searched_keys_or_epochs() -> None:
    space = SearchSpace()
    space.check_flags({"alpha_rec", "batch_size", "holdout_frac"})
    with pytest.raises(SearchSpaceError, match='^lr: given as a flag but also searched.*"lr": '
                                               r"null.*\['lr', 'replay_ratio'\]"):
        space.check_flags({"replay_ratio", "lr", "seed"})
    with pytest.raises(SearchSpaceError, match="^epochs: trials train --max-epochs"):
        space.check_flags({"epochs"})
    SearchSpace.from_dict({"lr": None}).check_flags({"lr"})


def test_pbt_mutations_only_for_searched_mutable_keys() -> None:
    space = SearchSpace()
    assert sorted(space.pbt_mutations(("lr", "alpha_fraud"))) == ["alpha_fraud", "lr"]
    with pytest.raises(UnknownSearchKeyError, match="^momentum:"):
        space.pbt_mutations(("momentum",))
    with pytest.raises(SearchSpaceError, match="^pbt_mutate: warmup_frac cannot change"):
        space.pbt_mutations(("warmup_frac",))
    with pytest.raises(SearchSpaceError, match="^pbt_mutate: alpha_rec is not searched"):
        space.pbt_mutations(("alpha_rec",))


# ---- sweep settings ------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "match"), [
    ({"metric": "ndcg"}, "^metric: must be one of"),
    ({"rec_weight": 0.0, "fraud_weight": 0.0}, "^rec_weight/fraud_weight: at least one"),
    ({"grace_period": 4, "max_epochs": 3}, "^grace_period: must be in"),
    ({"scheduler": "pbt", "search": "optuna"}, "^search: pbt explores by itself"),
    ({"scheduler": "pbt", "num_samples": 1}, "^num_samples: pbt needs a population"),
    ({"scheduler": "pbt", "max_epochs": 2, "perturbation_interval": 2},
     "^perturbation_interval: must be < max_epochs"),
    ({"scheduler": "pbt", "trial_backend": "ray_train"}, "^trial_backend: pbt needs the loop"),
    ({"scheduler": "hyperband"}, "^scheduler: must be asha or pbt"),
    ({"name": "a/b"}, "^name: must be a plain folder name"),
])
def test_bad_sweep_setting_fails_naming_it(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SweepConfig(**settings)  # type: ignore[arg-type]


def test_ray_train_trials_at_once_leave_room_for_their_workers() -> None:
    two = IncrementalConfig.of(num_workers=2, cpus_per_worker=1.0)
    # 2.1 CPUs per trial: 16 CPUs hold 7 (unlimited 0.1-CPU trials would starve workers).
    assert ray_train_concurrency(16, 0, two, use_gpu=False, cap=0) == 7
    assert ray_train_concurrency(16, 0, two, use_gpu=False, cap=3) == 3
    assert ray_train_concurrency(16, 4, two, use_gpu=True, cap=0) == 2   # GPUs bind first
    small = IncrementalConfig.of(num_workers=1, cpus_per_worker=0.8)
    assert ray_train_concurrency(2, 0, small, use_gpu=False, cap=0) == 2  # 0.9 each
    assert ray_train_concurrency(2, 0, IncrementalConfig.of(num_workers=1), False, 0) == 1
    with pytest.raises(ConfigError, match="^num_workers: 2 Train workers x 1.0 CPU"):
        ray_train_concurrency(2, 0, two, use_gpu=False, cap=0)


def test_cli_rejects_bad_settings_before_starting_ray(tmp_path: Path) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"dropout": {"uniform": [0.0, 0.5]}}))
    proc = subprocess.run([sys.executable, "-m", "tuning.sweep", "--space-file", str(space)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: dropout: not a field of TrainConfig" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


# ---- objective, best trial, Pareto front -------------------------------------------------

def test_combined_score_weights_and_missing_tasks() -> None:
    assert combined_score(0.2, 0.6, 0.5, 0.5) == pytest.approx(0.4)
    assert combined_score(0.2, 0.6, 1.0, 0.25) == pytest.approx(0.35)
    assert combined_score(0.2, math.nan, 1.0, 0.0) == pytest.approx(0.2)
    assert math.isnan(combined_score(0.2, math.nan, 1.0, 0.5))


def test_pareto_front_keeps_exactly_the_non_dominated_trials() -> None:
    rows = [row("a", 0.30, 0.10), row("b", 0.20, 0.40), row("c", 0.10, 0.50),
            row("d", 0.20, 0.30),   # dominated by b
            row("e", 0.30, 0.05),   # dominated by a (same rec, lower fraud)
            row("f", 0.20, 0.40),   # tie with b: kept
            row("g", math.nan, 0.90)]  # unmeasured rec: left out
    assert [r.trial_id for r in pareto_front(rows)] == ["a", "b", "f", "c"]
    assert pareto_front([]) == []


def test_best_row_is_the_highest_metric_and_no_report_fails() -> None:
    rows = [row("a", 0.30, 0.10), row("b", 0.20, 0.40), row("c", 0.10, 0.60)]
    assert best_row(rows, "score").trial_id == "c"       # 0.35 > 0.30 (b) > 0.20 (a)
    assert best_row(rows, "rec_ndcg").trial_id == "a"
    failed = [TrialRow("x", {}, {}, 0, error="FloatingPointError: non-finite loss\nstack"),
              TrialRow("y", {}, {"score": math.nan}, 1)]
    with pytest.raises(MetricNotReportedError,
                       match=r"^metric: no trial reported a finite 'score' \(2 trials; "
                             r"errors: \['FloatingPointError: non-finite loss'\]\)"):
        best_row(failed, "score")
    with pytest.raises(MetricNotReportedError, match="'fraud_auc_pr'"):
        best_row([TrialRow("z", {}, {"score": 0.3}, 1)], "fraud_auc_pr")


def test_best_config_doc_splits_train_and_incremental_keys_and_is_strict_json() -> None:
    best = row("b", 0.2, 0.4, lr=0.003, schedule="linear", replay_ratio=0.25)
    nan_row = TrialRow("n", {"lr": 0.1}, {"score": math.nan}, 1)
    doc = best_config_doc(best, [best, nan_row], [best], ["lr", "schedule"], ["replay_ratio"],
                          {"sweep_id": "s1", "metric": "score", "max_epochs": 3,
                           "window": "2024-01-01"})
    assert doc["train_config"] == {"lr": 0.003, "schedule": "linear", "epochs": 3}
    assert doc["incremental_config"] == {"replay_ratio": 0.25}
    assert doc["sweep_id"] == "s1" and doc["window"] == "2024-01-01"
    assert doc["value"] == pytest.approx(0.3) and doc["num_trials"] == 2
    assert doc["pareto_front"] == [{"trial_id": "b", "rec_ndcg": 0.2, "fraud_auc_pr": 0.4}]
    json.loads(dump_json(doc, "best.json"))  # no NaN sneaks in
    TrainConfig(**{k: v for k, v in doc["train_config"].items()})


def test_finalists_are_the_trials_that_trained_every_epoch() -> None:
    done = [row("a", 0.1, 0.1), row("b", 0.2, 0.2)]
    stopped = dataclasses.replace(row("s", 0.9, 0.9), epochs=1)
    failed = dataclasses.replace(row("f", 0.9, 0.9), error="RuntimeError: boom")
    assert finalists([*done, stopped, failed], max_epochs=2) == done
    assert finalists([stopped], max_epochs=2) == [stopped]  # none finished: all compete
    # The stopped trial's higher last score does not win over the finished ones.
    assert best_row(finalists([*done, stopped], 2), "score").trial_id == "b"


def test_table_sorts_by_the_metric_and_marks_front_and_best() -> None:
    rows = [row("a", 0.30, 0.10, lr=0.01), row("c", 0.10, 0.50, lr=0.002),
            row("d", 0.05, 0.05, lr=0.02)]
    table = format_table(rows, "score", pareto_front(rows), rows[1]).splitlines()
    assert table[0].split() == ["trial", "status", "epochs", "lr", "rec_ndcg", "fraud_auc_pr",
                                "score", "pareto", "best"]
    assert [line.split() for line in table[2:]] == [
        ["c", "OK", "2", "0.002", "0.1", "0.5", "0.3", "*", "best"],
        ["a", "OK", "2", "0.01", "0.3", "0.1", "0.2", "*"],
        ["d", "OK", "2", "0.02", "0.05", "0.05", "0.05"]]
    by_rec = format_table(rows, "rec_ndcg", []).splitlines()
    assert [line.split()[0] for line in by_rec[2:]] == ["a", "c", "d"]


@pytest.mark.parametrize(("path", "trial_id"), [
    ("/r/sweep/loop_trial_3b338_00001_1_alpha_fraud=1.6341,lr=0.0039_2026-11-22_21-10-21",
     "3b338_00001"),
    ("bucket/tune/s/loop_trial_1bedde5b_3_alpha_fraud=0.1098_2026-11-22_21-28-13/",
     "1bedde5b"),
    ("/r/sweep/ray_train_trial_f992e_00000_0_lr=0.0008_2026-11-22", "f992e_00000"),
    ("/r/sweep/custom-name", "custom-name"),
])
def test_trial_id_from_trial_folder(path: str, trial_id: str) -> None:
    assert trial_id_of(path) == trial_id


# ---- the store snapshot trials read --------------------------------------------------------

def test_snapshot_holds_latest_verbatim_and_refuses_writes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert snapshot_latest(store).latest() is None
    store.publish({"model.safetensors": b"weights-1"}, {"window": "w1"}, parent=None)
    second = store.publish({"model.safetensors": b"weights-2", "history.parquet": b"h"},
                           {"window": "w2"}, parent=store.latest().version)  # type: ignore
    snap = snapshot_latest(store)
    info = snap.latest()
    assert info is not None and info.version == second.version
    assert info.user_meta == {"window": "w2"}
    snap.load(second.version, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"weights-2"
    assert (tmp_path / "out" / "history.parquet").read_bytes() == b"h"
    assert len(snap.list_versions()) == 1  # only latest travels to the trials
    with pytest.raises(ReadOnlySnapshotError, match="read-only"):
        snap.put_config("best", {"x": 1})


def test_snapshot_carries_the_title_vectors(tmp_path: Path) -> None:
    """training.store.title_vectors: trials take the catalogue's vectors from the snapshot
    instead of encoding every title again."""
    store = LocalStore(tmp_path / "store")
    store.publish({"model.safetensors": b"w"}, {"window": "w1"}, parent=None)
    vectors = {"mug": np.arange(3, dtype=np.float32), "cup": np.ones(3, dtype=np.float32)}
    store.put_title_vectors("sig1", vectors)
    back = snapshot_latest(store).get_title_vectors("sig1")
    assert list(back) == ["mug", "cup"] and all(np.array_equal(back[t], vectors[t])
                                                for t in vectors)
    assert snapshot_latest(LocalStore(tmp_path / "empty")).get_title_vectors("sig1") == {}
