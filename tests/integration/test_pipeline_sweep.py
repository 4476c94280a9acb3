"""`--sweep-every`: a Ray Tune sweep inside the pipeline tunes on windows already scored,
and its best config feeds ours' later updates. Real local Ray (Tune), the real MiniLM
(frozen), in-process training of every arm to keep the test short."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cluster.pipeline_config import PipelineConfig
from cluster.runner import Pipeline
from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig

pytestmark = pytest.mark.integration

SHOP = SyntheticShopConfig(n_windows=4, interactions_per_window=600,
                           transactions_per_window=300, n_users=150, n_items=80,
                           fraud_rate=0.1)


def test_sweep_tunes_on_seen_windows_and_feeds_later_updates(ray_cluster: None,
                                                             tmp_path: Path) -> None:
    cfg = PipelineConfig(report_dir=str(tmp_path / "report"), work_dir=str(tmp_path / "w"),
                         methods=("incremental", "popularity"), sweep_every=2,
                         sweep_samples=2, serve=False, once=True)
    inc = IncrementalConfig.of(source="synthetic", store=str(tmp_path / "store"),
                            trainer="local", storage_path=str(tmp_path / "ray"))
    pipeline = Pipeline(cfg, inc, TrainConfig(epochs=1, batch_size=64),
                        ModelConfig(finetune_layers=0, dim=32), SHOP)
    result = pipeline.run()
    ids = result["windows"]

    # One sweep, after window 1: from the pretrained start, trained on 0, scored on 1.
    assert list(result["sweeps"]) == [ids[1]]
    sweep = result["sweeps"][ids[1]]
    assert (sweep["trained_on"], sweep["scored_on"], sweep["start_version"]) == \
        (ids[0], ids[1], None)
    assert sweep["best_config"]["window"] == ids[0]
    assert sweep["best_config"]["validation_window"] == ids[1]
    assert sweep["written_to"].endswith("configs/best.json")
    used = [result["updates"][w]["incremental"]["config_used"] for w in ids]
    assert used[:2] == ["flags/defaults (no configs/best.json)"] * 2
    assert all(u.startswith(f"configs/best.json (sweep pipeline-{ids[1]})") for u in used[2:])
    for w in ids[1:]:
        assert math.isfinite(result["prequential"][w]["incremental"]["rec"]["ndcg@20"])
