"""Incremental fine-tuning on a real local Ray cluster and the real MiniLM: Ray Train with 2
CPU workers where the test is about Ray Train (S3 run storage, a worker failure), the default
trainer (auto: in-process for these small windows) elsewhere."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.fit.raytrain import TrainerStartError
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig, load_model
from training.store import CheckpointCorruptError, open_store
from training.update.run import run_incremental

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("idle_ray")]

SHOP = SyntheticShopConfig(seed=3, n_users=300, n_items=150, new_items_per_window=10,
                           n_windows=3, interactions_per_window=2500,
                           transactions_per_window=800, fraud_rate=0.03)
MODEL = ModelConfig(finetune_layers=1, dim=32, history_len=5)
TRAIN = TrainConfig(epochs=1, batch_size=128, device="cpu", seed=1)


def run(store: str, tmp: Path, endpoint: str | None = None, train: TrainConfig = TRAIN,
        **overrides: Any) -> dict[str, Any]:
    storage = overrides.pop("storage_path", str(tmp / "ray"))
    inc = IncrementalConfig.of(source="synthetic", store=store, endpoint_url=endpoint,
                            num_workers=2, storage_path=storage, **overrides)
    return run_incremental(inc, train, MODEL, SHOP)


def _params(store: str, version: str, tmp: Path, endpoint: str | None) -> dict[str, torch.Tensor]:
    dest = tmp / f"load-{version}"
    open_store(store, endpoint).load(version, dest)
    return dict(load_model(dest).named_parameters())


def _two_windows(store: str, tmp: Path, endpoint: str | None = None,
                 **overrides: Any) -> None:
    # The first version in-process (one Ray Train start-up less), the update from it on
    # Ray Train: the chain crosses trainers through the store alone.
    first = run(store, tmp, endpoint, **{**overrides, "trainer": "local"})
    assert first["promoted"] and first["parent"] is None
    assert first["train"]["trainer"] == "local"
    assert first["window"] == "2024-01-01"
    second = run(store, tmp, endpoint, **overrides)
    assert (second["train"]["trainer"], second["train"]["workers"]) == ("ray", 2)
    assert second["window"] == "2024-01-08"
    assert second["parent"] == first["version"]
    s = open_store(store, endpoint)
    latest = s.latest()
    assert latest is not None
    if second["promoted"]:
        assert latest.version == second["version"] != first["version"]
        meta = s.read_meta(second["version"])
        assert meta["parent"] == first["version"] and meta["window"] == "2024-01-08"
    a = _params(store, first["version"], tmp, endpoint)
    b = _params(store, second["version"], tmp, endpoint) if second["promoted"] else None
    if b is not None:
        changed = [n for n in a if n in b and a[n].shape == b[n].shape
                   and not torch.equal(a[n], b[n])]
        # The fine-tuned top encoder layer and the heads moved; frozen layers did not.
        assert "text.bert.encoder.layer.5.output.dense.weight" in changed
        assert "fraud_mlp.0.weight" in changed and "user_mlp.0.weight" in changed
        frozen = [n for n in a if ".layer.0." in n]
        assert frozen and all(torch.equal(a[n], b[n]) for n in frozen)
        # New users of the second window grew the id table.
        assert b["user_emb.weight"].shape[0] > a["user_emb.weight"].shape[0]


def test_two_windows_on_moto_s3(tmp_path: Path, moto_s3: str, s3_bucket: str,
                                s3_client: Any) -> None:
    # The local store's chain is the same code (unit tier, and the destroyed-candidate test
    # below); each Ray Train fit costs ~20 s of start-up, so one Ray Train fit on S3 here.
    # A budget of 0 MiB: each worker copies its shard from S3 into mapped local files, as a
    # worker whose shard is above its budget does (the in-memory path: the other Ray tests).
    bucket = s3_bucket.split("/")[2]
    _two_windows(s3_bucket, tmp_path, moto_s3, gate_tolerance=1.0, trainer="ray",
                 storage_path=f"s3://{bucket}/ray-runs", examples_memory_mib=0)
    # The run's checkpoints stay in its S3 storage; the start state it read from there is
    # deleted once the run ends.
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="ray-runs/") for o in page.get("Contents", [])]
    runs = {k.split("/")[1] for k in keys}
    assert any(r.startswith("incremental-2024-01-08-") for r in runs), runs
    assert not [r for r in runs if r.endswith("-start")], runs


def test_a_destroyed_candidate_is_rejected_then_a_corrupt_latest_stops_the_next_run(
        tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    first = run(str(store_dir), tmp_path)
    wrecked = dataclasses.replace(TRAIN, lr=50.0, encoder_lr=5.0, warmup_frac=0.0,
                                  schedule="constant", grad_clip=0.0)
    # The loop trains the towers; the ranking-time terms (chosen on the tail) and the fraud
    # trees (fitted outside the loop) would carry the served scores of a wrecked loop, so the
    # candidate ranks with its towers alone: what a destroyed training run changes.
    second = run(str(store_dir), tmp_path, train=wrecked, distill_weight=0.0,
                 replay_ratio=0.0, repeat_bonus_grid=(0.0,), count_weight_grid=(0.0,))
    assert not second["promoted"]
    assert "fell" in second["gate"]
    store = open_store(str(store_dir))
    assert store.latest().version == first["version"]
    assert second["version"] in store.list_rejected()

    # The next update resumes from the rejected head and is gated against latest, which it
    # loads and verifies: a truncated latest stops it with a named error, publishing nothing.
    weights = store_dir / "versions" / first["version"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointCorruptError, match="model.safetensors"):
        run(str(store_dir), tmp_path)
    assert store.latest() is not None and store.latest().version == first["version"]
    assert store.list_versions() == [first["version"]]


def test_worker_failure_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    result = run(str(tmp_path / "store"), tmp_path, trainer="ray", checkpoint_every=2,
                 inject_failure_at_step=3, inject_failure_marker=str(marker))
    assert marker.exists()
    assert result["promoted"]
    assert result["train"]["resumed_from"] == 2
    assert result["train"]["steps"] >= 4


def test_an_online_retail_day_on_ray_train(tmp_path: Path) -> None:
    """A source without transactions (no fraud rows, no fraud features) on Ray Train: its
    width-0 feature column once stopped every such update of >= 400 steps (a year of
    monthly windows fell back to it in the full retrain) while writing the rank files."""
    retail = Path(__file__).resolve().parents[2] / "data" / "online_retail"
    inc = IncrementalConfig.of(source="online_retail", path=str(retail), freq="day",
                               store=str(tmp_path / "store"), storage_path=str(tmp_path / "ray"),
                               num_workers=2, trainer="ray", gate_tolerance=1.0)
    result = run_incremental(inc, TRAIN, dataclasses.replace(MODEL, finetune_layers=0), None)
    assert (result["train"]["trainer"], result["train"]["workers"]) == ("ray", 2)
    assert result["window"] == "2010-12-01" and result["promoted"]
    assert result["train"]["steps"] > 0
    meta = open_store(str(tmp_path / "store")).read_meta(result["version"])
    assert meta["window"] == "2010-12-01"
    # The model Ray Train returned keeps the driver's title vectors in the store
    # (training.update.title_cache): every title of its catalogue, item index 0's included.
    store = open_store(str(tmp_path / "store"))
    with store.opened(result["version"]) as (_, folder):
        model = load_model(folder)
    stored = store.get_title_vectors(
        model.text.frozen_signature())
    assert result["titles"]["written"] == len(stored) > 0
    assert set(model.item_titles) <= set(stored)


def test_a_run_the_cluster_cannot_place_fails_in_bounded_time_and_publishes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 workers x 1.5 CPUs on the session's 2-CPU Ray: the placement group never fits.
    # Ray Train's default is to retry the start forever; start_retries=1 stops after two
    # starts of 3 s each (the timeout reaches the controller from this process's env).
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "3")
    began = time.monotonic()
    with pytest.raises(TrainerStartError, match=r"start_retries=1 .*cpus_per_worker=1.5"):
        run(str(tmp_path / "store"), tmp_path, trainer="ray", cpus_per_worker=1.5,
            start_retries=1)
    assert time.monotonic() - began < 120
    assert open_store(str(tmp_path / "store")).list_versions() == []
    # The failed run's placement group is gone: the next Ray Train run gets its CPUs.
    import ray

    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
