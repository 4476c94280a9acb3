"""What every Ray Train worker starts from, as a checkpoint directory: the start model, the
distillation teacher, the restored optimizer moments, and the frozen title outputs the
driver already computed.

The driver writes it once per fit (:func:`write_start_state`) and uploads it beside the
run's own checkpoints in Ray Train storage (local directory or S3), so workers on any node
download it through ``ray.train.Checkpoint`` instead of each fetching one object-store blob
holding everything. Same formats as a published version: ``model.safetensors`` +
``model.json`` (:func:`training.model.save_model`) for the model and ``teacher/``, the
optimizer as safetensors + JSON meta, never pickle::

    start/
      model.safetensors, model.json       the model to train (vocab already grown)
      teacher/model.safetensors, ...      the teacher (absent without distillation)
      optimizer.safetensors               restored moments (absent on a fresh start)
      text_cache.safetensors              frozen title outputs, keyed by position
      start.json                          {"optimizer": meta | null, "titles": [...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.fit.optim_state import OPTIMIZER_FILE
from training.fit.result import OptimizerState
from training.model import ShopStreamModel, load_model, save_model

START_FILE = "start.json"
TEACHER_DIR = "teacher"
TEXT_CACHE_FILE = "text_cache.safetensors"


@dataclass
class StartState:
    model: ShopStreamModel
    teacher: ShopStreamModel | None
    optimizer: OptimizerState | None
    text_cache: dict[str, torch.Tensor]


def write_start_state(directory: Path, model: ShopStreamModel,
                      teacher: ShopStreamModel | None, optimizer: OptimizerState | None,
                      text_cache: dict[str, torch.Tensor]) -> list[Path]:
    """Write the start state into ``directory``; returns every file written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = save_model(model, directory)
    if teacher is not None:
        paths += save_model(teacher, directory / TEACHER_DIR)
    if optimizer is not None:
        save_file(optimizer[0], str(directory / OPTIMIZER_FILE))
        paths.append(directory / OPTIMIZER_FILE)
    titles = list(text_cache)
    # Keys by position: a title may hold any character, a safetensors key should not.
    save_file({str(i): text_cache[t].contiguous() for i, t in enumerate(titles)},
              str(directory / TEXT_CACHE_FILE))
    (directory / START_FILE).write_text(json.dumps(
        {"optimizer": optimizer[1] if optimizer is not None else None, "titles": titles}))
    return [*paths, directory / TEXT_CACHE_FILE, directory / START_FILE]


def read_start_state(directory: Path) -> StartState:
    """The state :func:`write_start_state` wrote (models in train mode for the student,
    eval mode for the teacher)."""
    start = json.loads((directory / START_FILE).read_text())
    model = load_model(directory).train()
    teacher_dir = directory / TEACHER_DIR
    teacher = load_model(teacher_dir) if teacher_dir.is_dir() else None
    optimizer = None
    if start["optimizer"] is not None:
        optimizer = (load_file(str(directory / OPTIMIZER_FILE)), start["optimizer"])
    tensors = load_file(str(directory / TEXT_CACHE_FILE))
    cache = {title: tensors[str(i)] for i, title in enumerate(start["titles"])}
    return StartState(model, teacher, optimizer, cache)
