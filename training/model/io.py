"""Checkpoints of :class:`ShopStreamModel`: weights as safetensors, everything else as JSON.

A checkpoint directory holds ``model.safetensors`` (every tensor of the state dict, encoder
included) and ``model.json`` (config, encoder architecture, id vocabularies, item titles and,
when fitted, the fraud trees in LightGBM's text format), so
:func:`load_model` rebuilds the model with no other input and without the pretrained package
weights (only the tokenizer comes from the package folder). No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from training.cli import ConfigError, config_from_dict
from training.model.calibration import CalibrationError, FraudCalibration
from training.model.config import ModelConfig
from training.model.fraud_trees import FraudTrees, FraudTreesError
from training.model.multitask import ShopStreamModel
from training.model.vocab import IdMap, IdMapError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
TREES_KEY = "fraud_trees"  # optional: the fraud trees (FraudTrees.to_json), if fitted
CALIBRATION_KEY = "fraud_calibration"  # optional: FraudCalibration.to_json (identity if absent)
META_KEYS: tuple[str, ...] = ("format_version", "model_config", "encoder_name",
                              "encoder_config", "users", "items", "item_titles")


class ModelFormatError(ValueError):
    """A checkpoint is missing, corrupt or of an unknown format; the message names the file."""


def config_from_json(values: dict[str, Any]) -> ModelConfig:
    """ModelConfig from its ``asdict`` form after a JSON round trip (lists back to tuples)."""
    return config_from_dict(ModelConfig, dict(values))


def _unwrap(model: nn.Module) -> ShopStreamModel:
    """The ShopStreamModel itself, also when wrapped (DistributedDataParallel's .module)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, ShopStreamModel):
        raise TypeError(f"expected a ShopStreamModel, got {type(inner).__name__}")
    return inner


def model_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta): contiguous CPU copies of the state dict, safe for safetensors (no two
    share memory), and the JSON-able rest of the model. A DDP wrapper is looked through."""
    model = _unwrap(model)
    tensors = {name: value.detach().to("cpu", copy=True).contiguous()
               for name, value in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_config": asdict(model.cfg),
        "encoder_name": model.cfg.encoder_name,
        "encoder_config": model.text.encoder_config_dict(),
        "users": model.users.to_json(),
        "items": model.items.to_json(),
        "item_titles": list(model.item_titles),
    }
    if model.fraud_trees is not None:  # optional: versions without trees omit the key
        meta[TREES_KEY] = model.fraud_trees.to_json()
    if model.fraud_calibration.kind != "identity":
        meta[CALIBRATION_KEY] = model.fraud_calibration.to_json()
    return tensors, meta


def _check_meta(meta: dict[str, Any]) -> None:
    if not isinstance(meta, dict):
        raise ModelFormatError(f"metadata must be a JSON object, got {type(meta).__name__}")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ModelFormatError(f"metadata lacks {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelFormatError(f"format_version {meta['format_version']!r} is not supported "
                               f"(this code reads {FORMAT_VERSION})")
    titles = meta["item_titles"]
    if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles):
        raise ModelFormatError("item_titles must be a list of strings")
    if not isinstance(meta["encoder_config"], dict):
        raise ModelFormatError("encoder_config must be a JSON object")


def model_from_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> ShopStreamModel:
    """Rebuild a model from :func:`model_state` output, in eval mode (call ``.train()`` to
    go on training)."""
    _check_meta(meta)
    try:
        users = IdMap.from_json(meta["users"])
        items = IdMap.from_json(meta["items"])
    except IdMapError as err:
        raise ModelFormatError(f"users/items: {err}") from err
    # Every weight is loaded below (strict), so skip the random init: at 100k items it is a
    # tenth of a serving replica's reload, and the pages it touches are written twice.
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = ShopStreamModel(config_from_json(meta["model_config"]), users, items,
                                meta["item_titles"], encoder_config=meta["encoder_config"])
    if meta.get(TREES_KEY) is not None:
        try:
            trees = FraudTrees.from_json(meta[TREES_KEY])
        except FraudTreesError as err:
            raise ModelFormatError(str(err)) from err
        model.set_fraud_trees(trees, model.cfg.fraud_tree_weight)
    if meta.get(CALIBRATION_KEY) is not None:
        try:
            model.set_fraud_calibration(FraudCalibration.from_json(meta[CALIBRATION_KEY]))
        except CalibrationError as err:
            raise ModelFormatError(str(err)) from err
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ModelFormatError(f"weights do not fit the recorded architecture: {err}") from err
    return model.eval()


def copy_model(model: nn.Module) -> ShopStreamModel:
    """An in-process copy of ``model`` (fresh tensors, eval mode) that keeps its encoder's
    frozen signature instead of hashing the copied weights again."""
    source = _unwrap(model)
    copy = model_from_state(*model_state(source))
    copy.text.copy_signature_from(source.text)
    return copy


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(model: nn.Module, directory: str | Path) -> list[Path]:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns both paths."""
    model = _unwrap(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = model_state(model)
    weights, meta_path = out / WEIGHTS_FILE, out / META_FILE
    _write_atomic(weights, lambda p: save_file(tensors, str(p),
                                               metadata={"format_version": str(FORMAT_VERSION)}))
    _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))
    logger.info("saved model (%d tensors, %d users, %d items) to %s",
                len(tensors), len(model.users) - 1, len(model.items) - 1, out)
    return [weights, meta_path]


def load_model(directory: str | Path) -> ShopStreamModel:
    """Load a checkpoint written by :func:`save_model` (eval mode); raises
    :class:`ModelFormatError` naming the broken file."""
    folder = Path(directory)
    weights, meta_path = folder / WEIGHTS_FILE, folder / META_FILE
    for path in (meta_path, weights):
        if not path.is_file():
            raise ModelFormatError(f"{path}: file is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{meta_path}: not valid JSON: {err}") from err
    try:
        _check_meta(meta)
        config_from_json(meta["model_config"])
    except (ModelFormatError, ConfigError) as err:
        raise ModelFormatError(f"{meta_path}: {err}") from err
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise ModelFormatError(f"{weights}: cannot read safetensors: {err}") from err
    try:
        return model_from_state(tensors, meta)
    except ModelFormatError as err:
        raise ModelFormatError(f"{weights} / {meta_path.name}: {err}") from err
