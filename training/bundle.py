"""A published version's files: model, optimizer moments, replay buffer, purchase history.

Everything needed to resume training or serve is in the version itself (nanoGPT-style
self-sufficient checkpoints): weights as safetensors, metadata as JSON, tables as
Parquet. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.history import PurchaseHistory
from training.model import ShopStreamModel, load_model, save_model
from training.optim_state import optimizer_state_tensors
from training.replay import ReplayBuffer
from training.store import CheckpointStore, VersionInfo

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.parquet"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class Parent:
    """The state a new window resumes from (``latest``, or the training head)."""

    info: VersionInfo
    model: ShopStreamModel
    optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]] | None
    replay: ReplayBuffer
    history: PurchaseHistory

    @property
    def window(self) -> str | None:
        window = self.info.user_meta.get("window")
        return None if window is None else str(window)


def load_parent(store: CheckpointStore, directory: Path, history_len: int,
                replay_capacity: int, seed: int, version: str | None = None) -> Parent | None:
    """Download and verify ``version`` (default ``latest``; a rejected candidate works too)
    into ``directory``; None when the store is empty."""
    if version is None:
        latest = store.latest()
        if latest is None:
            return None
        version = latest.version
    info = store.load(version, directory)
    meta = info.user_meta
    model = load_model(directory)
    optimizer = None
    if (directory / OPTIMIZER_FILE).exists():
        optimizer = (load_file(str(directory / OPTIMIZER_FILE)), meta["optimizer"])
    replay_meta = meta.get("replay")
    replay = ReplayBuffer.load(directory, replay_meta) if replay_meta else \
        ReplayBuffer(replay_capacity, seed)
    history_path = directory / HISTORY_FILE
    history = PurchaseHistory.load(history_path, history_len) if history_path.exists() \
        else PurchaseHistory(history_len)
    logger.info("resuming from version %s (window %s)", info.version, meta.get("window"))
    return Parent(info, model, optimizer, replay, history)


def write_bundle(directory: Path, model: ShopStreamModel,
                 optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]] | None,
                 replay: ReplayBuffer, history: PurchaseHistory) -> tuple[dict[str, Path],
                                                                           dict[str, Any]]:
    """Write a version's files; returns ({name: path}, meta entries they need)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {p.name: p for p in save_model(model, directory)}
    meta: dict[str, Any] = {}
    if optimizer is not None:
        save_file(optimizer[0], str(directory / OPTIMIZER_FILE))
        paths[OPTIMIZER_FILE] = directory / OPTIMIZER_FILE
        meta["optimizer"] = optimizer[1]
    replay_paths, meta["replay"] = replay.save(directory)
    paths.update({p.name: p for p in replay_paths})
    paths.update({p.name: p for p in history.save(directory / HISTORY_FILE)})
    model_meta = json.loads((directory / "model.json").read_text())
    meta["model_config"] = model_meta.get("model_config")
    meta["encoder_name"] = model_meta.get("encoder_name")
    return paths, meta


def optimizer_payload(optimizer: torch.optim.Optimizer, model: ShopStreamModel
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = optimizer_state_tensors(optimizer, model)
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta
