"""A published version's files: model, optimizer moments, replay buffer, purchase history,
and the item title vectors serving needs (so a replica never runs the text encoder over the
catalogue the version already knows).

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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.features.history import PurchaseHistory
from training.features.replay import ReplayBuffer
from training.fit.optim_state import OPTIMIZER_FILE
from training.model import (
    ModelFormatError,
    ShopStreamModel,
    load_model,
    project_titles,
    save_model,
)
from training.store import CheckpointStore, VersionInfo

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.parquet"
ITEM_TEXT_FILE = "item_text.safetensors"
ITEM_TEXT_TENSOR = "projected"


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
    save_file({ITEM_TEXT_TENSOR: item_text_vectors(model)}, str(directory / ITEM_TEXT_FILE))
    paths[ITEM_TEXT_FILE] = directory / ITEM_TEXT_FILE
    model_meta = json.loads((directory / "model.json").read_text())
    meta["model_config"] = model_meta.get("model_config")
    meta["encoder_name"] = model_meta.get("encoder_name")
    return paths, meta


def item_text_vectors(model: ShopStreamModel) -> torch.Tensor:
    """Title vectors [len(model.items), dim] of every item index (row 0: the empty title),
    as the version's model computes them: :func:`training.model.project_titles`."""
    return project_titles(model, list(model.item_titles)).contiguous()


def read_item_text(directory: Path, model: ShopStreamModel) -> torch.Tensor | None:
    """The version's published title vectors (:func:`item_text_vectors`), None for a version
    published without them; a file of the wrong shape or with non-finite values raises
    :class:`ModelFormatError` naming it."""
    path = directory / ITEM_TEXT_FILE
    if not path.exists():
        return None
    try:
        projected = load_file(str(path))[ITEM_TEXT_TENSOR]
    except (OSError, SafetensorError, KeyError) as exc:  # unreadable, damaged, tensor missing
        raise ModelFormatError(f"{ITEM_TEXT_FILE}: cannot read {ITEM_TEXT_TENSOR!r}: {exc}") \
            from exc
    want = (len(model.item_titles), model.cfg.dim)
    if tuple(projected.shape) != want:
        raise ModelFormatError(f"{ITEM_TEXT_FILE}: expected shape {want} (one row per item "
                               f"index), got {tuple(projected.shape)}")
    if not torch.isfinite(projected).all():
        raise ModelFormatError(f"{ITEM_TEXT_FILE}: non-finite values")
    return projected.float()
