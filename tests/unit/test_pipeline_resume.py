"""The pipeline resumes where it stopped: nothing is trained twice, nothing is skipped.

No Ray: every arm uses the in-process trainer and a tiny random encoder.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cluster.comparison.arms import FULL, NEURAL_METHODS, IncrementalArm, arm_store_uri
from cluster.comparison.report import check_report, write_report
from cluster.pipeline_config import PipelineConfig
from cluster.runner import Pipeline, PipelineStateError
from training.config import TrainConfig
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig, ShopStreamModel, load_model
from training.store import open_store

pytestmark = pytest.mark.unit

SHOP = SyntheticShopConfig(n_windows=3, interactions_per_window=500,
                           transactions_per_window=300, n_users=120, n_items=60,
                           fraud_rate=0.1)
MODEL = ModelConfig(encoder_init="tiny_random", dim=16, history_len=3)
TRAIN = TrainConfig(epochs=1, batch_size=64, n_negatives=16)


def configs(tmp_path: Path, **changes: object) -> tuple[PipelineConfig, IncrementalConfig]:
    cfg = PipelineConfig(report_dir=str(tmp_path / "report"), work_dir=str(tmp_path / "work"),
                         serve=False, once=True)
    inc = IncrementalConfig.of(source="synthetic", store=str(tmp_path / "store"),
                            trainer="local", storage_path=str(tmp_path / "ray"),
                            use_best_config=False, gate_tolerance=1.0,
                            **changes)  # type: ignore[arg-type]
    return cfg, inc


def test_crash_then_rerun_resumes_without_training_twice(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cfg, inc = configs(tmp_path)
    real_update = IncrementalArm.update

    def crash_on_last(self: IncrementalArm, windows: list, t: int) -> dict:
        if t == 2 and self.name == FULL:
            raise RuntimeError("simulated crash while updating full_retrain on window 2")
        return real_update(self, windows, t)

    monkeypatch.setattr(IncrementalArm, "update", crash_on_last)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Pipeline(cfg, inc, TRAIN, MODEL, SHOP).run()
    store = open_store(inc.store.uri)
    ids = Pipeline(cfg, inc, TRAIN, MODEL, SHOP).result["windows"]
    # Ours and the no-replay arm had already published window 2 before the crash.
    assert store.latest() is not None and store.latest().user_meta["window"] == ids[2]
    assert len(store.list_versions()) == 3
    monkeypatch.setattr(IncrementalArm, "update", real_update)

    result = Pipeline(cfg, inc, TRAIN, MODEL, SHOP).run()
    assert len(store.list_versions()) == 3  # window 2 was not trained again
    assert set(result["updates"][ids[2]]) == set(NEURAL_METHODS)
    # Baselines are fitted on the data before a window, timed under the window before it.
    assert set(result["updates"][ids[1]]) == set(result["methods"])
    assert sorted(result["prequential"]) == ids[1:]
    for window in ids[1:]:
        ours = result["prequential"][window]["incremental"]
        assert math.isfinite(ours["rec"]["ndcg@20"]) and math.isfinite(ours["fraud"]["auc_pr"])
    assert sorted(result["forgetting"]["incremental"]) == ids
    assert sorted(result["forgetting"]["incremental"][ids[2]]) == ids
    paths = write_report(result, Path(cfg.report_dir))
    assert check_report(Path(cfg.report_dir)) == [], paths
    # Ours and the full retrain each chose their ranking-time terms on their own held-out
    # tail (the retrain is the same gated update, from scratch) and rank with them.
    for uri, name in ((inc.store.uri, "ours"), (arm_store_uri(inc.store.uri, FULL), "full")):
        arm = open_store(uri)
        latest = arm.latest()
        assert latest is not None
        meta = arm.read_meta(latest.version)
        assert meta["ranking_terms"]["n_warm"] > 0
        assert len(meta["ranking_terms"]["warm_ndcg"]) == \
            len(inc.continual.repeat_bonus_grid) * len(inc.continual.count_weight_grid)
        model = latest_model(uri, tmp_path / name)
        assert (model.cfg.repeat_bonus, model.cfg.count_weight) == \
            (meta["ranking_terms"]["repeat_bonus"], meta["ranking_terms"]["count_weight"])
    full_meta = open_store(arm_store_uri(inc.store.uri, FULL)).latest().user_meta  # type: ignore[union-attr]
    assert full_meta["kind"] == "fallback_retrain" and "gate" in full_meta


def latest_model(uri: str, directory: Path) -> ShopStreamModel:
    s = open_store(uri)
    s.load(s.latest().version, directory)  # type: ignore[union-attr]
    return load_model(directory)


def test_store_of_another_source_is_refused(tmp_path: Path) -> None:
    cfg, inc = configs(tmp_path)
    # The smallest run that saves a state: two windows, one neural method and one baseline.
    cfg = PipelineConfig(**{**cfg.__dict__, "max_windows": 2,
                            "methods": ("incremental", "popularity")})
    Pipeline(cfg, inc, TRAIN, MODEL, SHOP).run()
    assert open_store(inc.store.uri).latest() is not None
    other = SyntheticShopConfig(**{**SHOP.__dict__, "seed": 1})
    with pytest.raises(PipelineStateError, match="store: .* holds a pipeline run over"):
        Pipeline(cfg, inc, TRAIN, MODEL, other)
    with pytest.raises(PipelineStateError, match="other windows or methods"):
        Pipeline(PipelineConfig(**{**cfg.__dict__, "methods": ("incremental",)}), inc,
                 TRAIN, MODEL, SHOP)
    Pipeline(cfg, inc, TRAIN, MODEL, SHOP)  # the same run resumes
