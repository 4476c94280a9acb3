"""Ray Tune sweeps on a real local Ray (2 CPUs) with the real MiniLM: ASHA on a local store
and on moto S3 feeding the next incremental run, PBT perturbations, the Ray Train backend."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import IncrementalConfig, apply_best_config
from training.model import ModelConfig
from training.store import open_store
from training.update.run import run_incremental
from tuning.config import SweepConfig
from tuning.report import finalists, pareto_front
from tuning.run import SweepResult, run_sweep
from tuning.space import SearchSpace

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("idle_ray")]

# Two windows: trials train on the first (empty store: fresh start) and are scored on the second.
SHOP = SyntheticShopConfig(seed=3, n_users=200, n_items=100, new_items_per_window=8,
                           n_windows=2, interactions_per_window=1200,
                           transactions_per_window=500, fraud_rate=0.05)
MODEL = ModelConfig(finetune_layers=0, dim=16, history_len=5)
TRAIN = TrainConfig(batch_size=128, device="cpu", seed=1)
TUNED_TRAIN = {"alpha_fraud", "lr", "warmup_frac", "schedule"}
TUNED_INC = {"distill_weight", "replay_ratio"}


def sweep(inc: IncrementalConfig, **settings: Any) -> tuple[SweepResult, float]:
    began = time.perf_counter()
    result = run_sweep(SweepConfig(**settings), SearchSpace(), inc, TRAIN, MODEL, SHOP)
    wall = time.perf_counter() - began
    print(f"\nsweep {result.sweep_id}: {len(result.rows)} trials, wall {wall:.1f} s\n"
          f"{result.table}")
    return result, wall


def check_asha(result: SweepResult, best: dict[str, Any] | None, sweep_id: str) -> None:
    rows = result.rows
    assert len(rows) == 4 and all(r.error is None for r in rows)
    assert len({r.trial_id for r in rows}) == 4
    assert max(r.epochs for r in rows) == 2 and min(r.epochs for r in rows) >= 1
    for r in rows:
        assert set(r.params) == TUNED_TRAIN | TUNED_INC
        assert r.value("score") == pytest.approx(0.5 * r.value("rec_ndcg")
                                                 + 0.5 * r.value("fraud_auc_pr"))
        assert 0 < r.value("rec_ndcg") <= 1 and 0 < r.value("fraud_auc_pr") <= 1
        assert len(r.history) == r.epochs and r.history[-1] == pytest.approx(r.value("score"))
    # The best config comes from the trials ASHA let train both epochs.
    full = [r for r in rows if r.epochs == 2]
    assert full and finalists(rows, 2) == full
    top = max(full, key=lambda r: r.value("score"))
    assert best is not None and best == result.best_config
    assert best["sweep_id"] == sweep_id and best["metric"] == "score"
    assert (best["window"], best["validation_window"]) == ("2024-01-01", "2024-01-08")
    assert best["trial_id"] == top.trial_id and best["value"] == pytest.approx(top.value("score"))
    assert best["train_config"] == {**{k: top.params[k] for k in TUNED_TRAIN}, "epochs": 2}
    assert best["incremental_config"] == {k: top.params[k] for k in TUNED_INC}
    front = {p["trial_id"] for p in best["pareto_front"]}
    assert front == {r.trial_id for r in pareto_front(full)}
    assert max(full, key=lambda r: r.value("rec_ndcg")).trial_id in front
    assert max(full, key=lambda r: r.value("fraud_auc_pr")).trial_id in front
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((result.report_dir / "sweep_summary.json").read_text())
    assert summary["best_trial"] == top.trial_id and len(summary["trials"]) == 4


def test_asha_sweep_on_local_store_feeds_the_next_incremental_run(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    inc = IncrementalConfig.of(source="synthetic", store=store, num_workers=1,
                            storage_path=str(tmp_path / "ray"))
    result, wall = sweep(inc, name="asha-local", num_samples=4, max_epochs=2,
                         results_path=str(tmp_path / "tune"))
    check_asha(result, open_store(store).get_config("best"), "asha-local")
    assert result.best_written_to == f"{open_store(store).uri}/configs/best.json"
    assert result.report_dir == Path(result.experiment_path)
    events = list(Path(result.experiment_path).rglob("events.out.tfevents.*"))
    assert len(events) == 4  # TensorBoard: one event file per trial
    print(f"4-trial ASHA sweep wall time: {wall:.1f} s")

    # The next update reads the same best.json whichever trainer runs it; the in-process one
    # saves a Ray Train start-up (the Ray Train path is test_incremental's).
    summary = run_incremental(inc.with_settings(trainer="local"), TRAIN, MODEL, SHOP)
    assert summary["config_used"] == "configs/best.json (sweep asha-local)"
    meta = open_store(store).read_meta(summary["version"])
    best = result.best_config
    for key, value in best["train_config"].items():
        assert meta["train_config"][key] == value
    for key, value in best["incremental_config"].items():
        assert meta["incremental_config"]["continual"][key] == value


def test_asha_sweep_on_moto_s3_writes_best_config_there(tmp_path: Path, moto_s3: str,
                                                        s3_bucket: str, s3_client: Any) -> None:
    bucket, prefix = s3_bucket.split("/", 3)[2:]
    inc = IncrementalConfig.of(source="synthetic", store=s3_bucket, endpoint_url=moto_s3,
                            storage_path=f"s3://{bucket}/ray-runs")
    result, _ = sweep(inc, name="asha-s3", num_samples=4, max_epochs=2,
                      results_path=f"s3://{bucket}/tune", report_dir=str(tmp_path / "report"))
    raw = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/configs/best.json")["Body"].read()
    check_asha(result, json.loads(raw), "asha-s3")
    assert result.best_written_to == f"{s3_bucket}/configs/best.json"
    assert result.experiment_path == result.best_config["results_path"] == \
        f"s3://{bucket}/tune/asha-s3"
    assert result.plot_path == tmp_path / "report" / "sweep.png"
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="tune/asha-s3/")
            ["Contents"]]
    assert sum("events.out.tfevents" in k for k in keys) == 4

    train, tuned, label = apply_best_config(open_store(s3_bucket, moto_s3), inc, TRAIN,
                                            frozenset({"lr"}))
    assert label == "configs/best.json (sweep asha-s3) overridden by flags ['lr']"
    assert train.lr == TRAIN.lr and train.schedule == result.best_config["train_config"][
        "schedule"]
    assert tuned.continual.replay_ratio == \
        result.best_config["incremental_config"]["replay_ratio"]


def test_pbt_perturbs_learning_rate_and_task_weights(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    inc = IncrementalConfig.of(source="synthetic", store=store)
    # Synchronous PBT: at each interval the weaker trial exploits the stronger one whatever
    # order their reports arrive in (asynchronous PBT can skip that when the weaker trial
    # always reports first, before the stronger one has a checkpoint to clone).
    result, _ = sweep(inc, name="pbt", scheduler="pbt", num_samples=2, max_epochs=2,
                      perturbation_interval=1, pbt_synch=True, results_path=str(tmp_path / "tune"))
    assert result.perturbations >= 1
    lines = (Path(result.experiment_path) / "pbt_global.txt").read_text().splitlines()
    assert len(lines) == result.perturbations
    for line in lines:
        target, clone, _, _, old, new = json.loads(line)
        assert target != clone
        changed = {k for k in old if old[k] != new[k]}
        assert changed and changed <= {"lr", "alpha_fraud"}
        assert all(new[k] > 0 for k in ("lr", "alpha_fraud"))
    assert all(r.epochs == 2 for r in result.rows)
    assert list(Path(result.experiment_path).rglob("checkpoint_*/model.safetensors"))
    # Each trial recorded the values every epoch ran with (through the checkpoint it
    # cloned: which epochs PBT perturbs varies from run to run, so only the shape is fixed).
    for row in result.rows:
        assert len(row.schedule) == 2 and all(set(e) == {"lr", "alpha_fraud"}
                                              for e in row.schedule)
    # best.json holds the best lineage's schedule, and the next update replays it: each
    # epoch starts at the peak learning rate PBT gave that epoch.
    best = open_store(store).get_config("best")
    assert best is not None and best["train_config"]["epoch_schedule"] == result.best.schedule
    assert best["train_config"]["lr"] == result.best.schedule[0]["lr"]
    summary = run_incremental(inc.with_settings(trainer="local"), TRAIN, MODEL, SHOP)
    assert summary["config_used"] == "configs/best.json (sweep pbt)"
    assert summary["train"]["epoch_peak_lrs"] == [e["lr"] for e in result.best.schedule]


def test_ray_train_backend_trials_fit_a_torch_trainer(tmp_path: Path) -> None:
    # One trial (0.1 CPU) whose TorchTrainer runs one 1-CPU worker; a fit costs ~30 s of
    # start-up, so one trial is enough here (the concurrency cap is unit-tested).
    inc = IncrementalConfig.of(source="synthetic", store=str(tmp_path / "store"), num_workers=1,
                            storage_path=str(tmp_path / "ray"))
    result, _ = sweep(inc, name="raytrain", trial_backend="ray_train", num_samples=1,
                      max_epochs=1, results_path=str(tmp_path / "tune"))
    assert len(result.rows) == 1 and result.rows[0].error is None
    for r in result.rows:
        assert r.epochs == 1 and r.metrics["fit_seconds"] > 0
        assert math.isfinite(r.value("score"))
    runs = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert len(runs) == 1 and runs[0].startswith("incremental-2024-01-01-")
    assert open_store(str(tmp_path / "store")).get_config("best")["trial_id"] == \
        result.best.trial_id
