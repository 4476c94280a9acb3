"""The neural methods the pipeline compares, each a chain of versions in its own store.

* ``incremental`` (ours): ``training.incremental.run_incremental`` into the main store:
  resume from the training head, replay + distillation, gate, publish (after repeated
  rejections: a gated full retrain). Serving follows its latest.
* ``incremental_no_replay``: the same update with replay and distillation switched off.
* ``full_retrain``: the same update with ``full_retrain`` on: from the pretrained encoder
  on all windows so far, every window, through the same gate, ranking-terms choice, fraud
  blend and publish (so its wall time counts the same phases as ours').
* ``frozen``: ours' first version, never updated.

The comparison arms live under ``<store>/arms/<name>`` (a directory or an S3 prefix), so a
rerun on the same store resumes every arm where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from training.cli import leaf_settings
from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.sources import merge_windows
from training.features.history import PurchaseHistory
from training.features.replay import ReplayBuffer
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig, ShopStreamModel, load_model
from training.store import CheckpointStore, open_store
from training.update.bundle import write_bundle
from training.update.run import json_safe, run_incremental

logger = logging.getLogger(__name__)

OURS = "incremental"
NO_REPLAY = "incremental_no_replay"
FULL = "full_retrain"
FROZEN = "frozen"
NEURAL_METHODS: tuple[str, ...] = (OURS, NO_REPLAY, FULL, FROZEN)
# Summary fields of an incremental update copied into the pipeline's update rows (read by
# cluster.comparison.staleness): what ran, what it resumed from, and what serving had afterwards.
STALENESS_FIELDS: tuple[str, ...] = ("kind", "start_from", "consecutive_rejections",
                                     "live_version", "live_window")


def arm_store_uri(store: str, name: str) -> str:
    return f"{store.rstrip('/')}/arms/{name}"


class Arm:
    """One neural method: a store of versions and the update that adds the next one."""

    def __init__(self, name: str, store: CheckpointStore) -> None:
        self.name = name
        self.store = store
        self._cached: tuple[str, ShopStreamModel] | None = None

    def model(self) -> ShopStreamModel | None:
        """The method's current model (its store's latest), None before its first update."""
        info = self.store.latest()
        if info is None:
            return None
        if self._cached is None or self._cached[0] != info.version:
            with self.store.opened(info.version, prefix="shopstream-arm-") as (_, folder):
                model = load_model(folder).eval()
                model.text.use_shared_cache()  # every arm encodes a title once
                self._cached = (info.version, model)
        return self._cached[1]

    def update(self, windows: list[WindowData], t: int) -> dict[str, Any]:
        raise NotImplementedError


# Every training and update setting: an arm that must never follow configs/best.json.
ALL_SETTINGS = leaf_settings(TrainConfig) | leaf_settings(IncrementalConfig)

class IncrementalArm(Arm):
    """``run_incremental`` on window ``t`` (the real update: gate and publish included);
    with ``inc.full_retrain`` a gated full retrain."""

    def __init__(self, name: str, inc: IncrementalConfig, train_cfg: TrainConfig,
                 model_cfg: ModelConfig, explicit: frozenset[str]) -> None:
        super().__init__(name, inc.store.open())
        self.inc, self.train_cfg, self.model_cfg = inc, train_cfg, model_cfg
        # The settings configs/best.json may not change (training.incremental's rule).
        self.explicit = explicit

    def update(self, windows: list[WindowData], t: int) -> dict[str, Any]:
        inc = dataclasses.replace(self.inc, window=windows[t].window_id)
        began = time.perf_counter()
        summary = run_incremental(inc, self.train_cfg, self.model_cfg, None, self.explicit)
        train = summary["train"]
        return {"wall_s": time.perf_counter() - began, "fit_s": train["fit_seconds"],
                "loop_s": train["loop_seconds"], "steps": train["steps"],
                "trainer": train["trainer"], "phases": summary["phases"],
                "version": summary["version"], "parent": summary["parent"],
                "promoted": summary["promoted"],
                "gate": summary["gate"], "config_used": summary["config_used"],
                **{key: summary[key] for key in STALENESS_FIELDS}}


class FrozenArm(Arm):
    """Ours' first version, copied once into its own store and never updated."""

    def __init__(self, store: CheckpointStore, source: Arm) -> None:
        super().__init__(FROZEN, store)
        self.source = source

    def update(self, windows: list[WindowData], t: int) -> dict[str, Any]:
        if self.store.latest() is not None:
            return {"wall_s": 0.0, "fit_s": 0.0, "loop_s": 0.0, "steps": 0,
                    "version": self.store.latest().version}  # type: ignore[union-attr]
        model = self.source.model()
        if model is None:
            raise RuntimeError(f"frozen: {self.source.name} has no version to freeze after "
                               f"window {windows[t].window_id}")
        history = PurchaseHistory(model.cfg.history_len).update(
            merge_windows(windows[:t + 1]).interactions)
        version = publish_model(self.store, model, windows[t].window_id, history,
                                {"method": FROZEN})
        return {"wall_s": 0.0, "fit_s": 0.0, "loop_s": 0.0, "steps": 0, "version": version}


def publish_model(store: CheckpointStore, model: ShopStreamModel, window_id: str,
                  history: PurchaseHistory, extra: dict[str, Any]) -> str:
    """Publish a model with an empty replay buffer and no optimizer state."""
    with tempfile.TemporaryDirectory(prefix="shopstream-arm-") as tmp:
        files, meta = write_bundle(Path(tmp), model, None, ReplayBuffer(1, 0), history)
        latest = store.latest()
        info = store.publish(files, json_safe({**meta, "window": window_id, **extra}),
                             parent=latest.version if latest else None)
    return info.version


def build_arms(methods: tuple[str, ...], inc: IncrementalConfig, arms_inc: IncrementalConfig,
               train_cfg: TrainConfig, model_cfg: ModelConfig,
               explicit: frozenset[str] = frozenset()) -> dict[str, Arm]:
    """The neural arms among ``methods``; ours always (serving and frozen follow it). Ours
    follows configs/best.json except for the ``explicit`` settings (the flags given); the
    ablation never does."""
    ours = IncrementalArm(OURS, inc, train_cfg, model_cfg, explicit)
    arms: dict[str, Arm] = {OURS: ours}
    if NO_REPLAY in methods:
        plain = arms_inc.with_settings(store=arm_store_uri(inc.store.uri, NO_REPLAY),
                                    replay_ratio=0.0, distill_weight=0.0,
                                    use_best_config=False)
        arms[NO_REPLAY] = IncrementalArm(NO_REPLAY, plain, train_cfg, model_cfg, ALL_SETTINGS)
    if FULL in methods:
        full = arms_inc.with_settings(store=arm_store_uri(inc.store.uri, FULL),
                                   full_retrain=True, use_best_config=False)
        arms[FULL] = IncrementalArm(FULL, full, train_cfg, model_cfg, ALL_SETTINGS)
    if FROZEN in methods:
        arms[FROZEN] = FrozenArm(open_store(arm_store_uri(inc.store.uri, FROZEN),
                                            inc.store.endpoint_url), ours)
    return arms
