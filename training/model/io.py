"""Checkpoints of :class:`ShopStreamModel`: weights as safetensors, everything else as JSON.

A checkpoint directory holds ``model.safetensors`` (the state dict's tensors) and
``model.json`` (config, encoder name and architecture, id vocabularies, item titles and, when
fitted, the fraud trees in LightGBM's text format and the calibration). No pickle anywhere.

The encoder's frozen weights (embeddings and the layers below ``finetune_layers``) never
train. When they are the installed encoder package's, as loaded (``encoder_init="pretrained"``),
the checkpoint leaves them to the package and records their hash under ``encoder_weights``:
MiniLM's frozen part is 84-91 MB of a version's 91 MB, the same in every version. Loading
such a checkpoint takes them from the package (which also supplies the tokenizer) and refuses
a package whose frozen weights hash differently (:class:`ModelFormatError` naming
``encoder_weights``). Any other encoder (random, or a state loaded over the package's) is
stored whole, and a checkpoint without the key holds every tensor.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
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

# 2: the frozen encoder weights may be left to the package (``encoder_weights``); 1 (every
# tensor stored) still loads.
FORMAT_VERSION = 2
READ_VERSIONS: tuple[int, ...] = (1, 2)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
TREES_KEY = "fraud_trees"  # optional: the fraud trees (FraudTrees.to_json), if fitted
CALIBRATION_KEY = "fraud_calibration"  # optional: FraudCalibration.to_json (identity if absent)
# optional: {"frozen": "package", "frozen_signature": ...}, frozen weights left to the package
ENCODER_WEIGHTS_KEY = "encoder_weights"
ENCODER_PREFIX = "text.bert."
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


def model_state(model: nn.Module, leave_to_package: bool = False
                ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta): contiguous CPU copies of the state dict, safe for safetensors (no two
    share memory), and the JSON-able rest of the model. A DDP wrapper is looked through.

    ``leave_to_package``: when the encoder's frozen weights are the installed package's, leave
    them out and record their hash (what :func:`save_model` writes)."""
    model = _unwrap(model)
    left = _frozen_keys(model) if leave_to_package and model.text.frozen_from_package \
        else set()
    tensors = {name: value.detach().to("cpu", copy=True).contiguous()
               for name, value in model.state_dict().items() if name not in left}
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
    if left:
        meta[ENCODER_WEIGHTS_KEY] = {"frozen": "package",
                                     "frozen_signature": model.text.frozen_signature()}
    return tensors, meta


def _frozen_keys(model: ShopStreamModel) -> set[str]:
    """The state-dict keys of the encoder's frozen weights (what the package may supply)."""
    return {ENCODER_PREFIX + name for name in model.text.frozen_names()}


def _check_meta(meta: dict[str, Any]) -> None:
    if not isinstance(meta, dict):
        raise ModelFormatError(f"metadata must be a JSON object, got {type(meta).__name__}")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ModelFormatError(f"metadata lacks {missing}")
    if meta["format_version"] not in READ_VERSIONS:
        raise ModelFormatError(f"format_version {meta['format_version']!r} is not supported "
                               f"(this code reads {', '.join(map(str, READ_VERSIONS))})")
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

    cfg = config_from_json(meta["model_config"])
    package = _package_signature(meta, cfg)
    with no_init_weights():
        model = ShopStreamModel(cfg, users, items, meta["item_titles"],
                                encoder_config=None if package else meta["encoder_config"])
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
    load_weights(model, tensors, meta)
    return model.eval()


def _package_signature(meta: dict[str, Any], cfg: ModelConfig) -> str | None:
    """The recorded hash of frozen weights left to the package; None if the checkpoint
    holds them."""
    weights = meta.get(ENCODER_WEIGHTS_KEY)
    if weights is None:
        return None
    if not (isinstance(weights, dict) and weights.get("frozen") == "package"
            and isinstance(weights.get("frozen_signature"), str)):
        raise ModelFormatError(f"{ENCODER_WEIGHTS_KEY} must be {{\"frozen\": \"package\", "
                               f"\"frozen_signature\": <hash>}}, got {weights!r}")
    if cfg.encoder_init != "pretrained":
        raise ModelFormatError(f"{ENCODER_WEIGHTS_KEY}: frozen weights left to the package, but "
                               f"model_config.encoder_init is {cfg.encoder_init!r}")
    return str(weights["frozen_signature"])


def load_weights(model: ShopStreamModel, tensors: dict[str, Tensor],
                 meta: dict[str, Any]) -> None:
    """Load a checkpoint's ``tensors`` (and ``meta``'s account of them) into ``model`` of the
    same architecture: all of them, or all but the frozen encoder weights, which must then be
    the package's ones the checkpoint recorded."""
    package = _package_signature(meta, model.cfg)
    if package is not None:
        text = model.text
        if not text.frozen_from_package or text.frozen_signature() != package:
            have = text.frozen_signature() if text.frozen_from_package else "not the package's"
            raise ModelFormatError(
                f"{ENCODER_WEIGHTS_KEY}: the checkpoint was trained on frozen encoder weights "
                f"{package}, the model here has {have} (package {meta.get('encoder_name')}; "
                "install the encoder package version it was trained with)")
    try:
        result = model.load_state_dict(tensors, strict=package is None)
    except RuntimeError as err:
        raise ModelFormatError(f"weights do not fit the recorded architecture: {err}") from err
    if package is not None:
        left = _frozen_keys(model)
        missing, unexpected = set(result.missing_keys) - left, result.unexpected_keys
        if missing or unexpected or left & set(tensors):
            raise ModelFormatError(
                f"weights do not fit the recorded architecture: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}, frozen weights stored although "
                f"{ENCODER_WEIGHTS_KEY} leaves them to the package: {sorted(left & set(tensors))}")


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


def save_model(model: nn.Module, directory: str | Path, leave_to_package: bool = True
               ) -> list[Path]:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns both paths.
    ``leave_to_package=False`` stores the package's frozen encoder weights too (a checkpoint
    that loads with any package version)."""
    model = _unwrap(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = model_state(model, leave_to_package=leave_to_package)
    weights, meta_path = out / WEIGHTS_FILE, out / META_FILE
    _write_atomic(weights, lambda p: save_file(tensors, str(p),
                                               metadata={"format_version": str(FORMAT_VERSION)}))
    _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))
    logger.info("saved model (%d tensors, %d users, %d items) to %s",
                len(tensors), len(model.users) - 1, len(model.items) - 1, out)
    return [weights, meta_path]


def read_checkpoint(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta) of a folder :func:`save_model` wrote, the meta checked; raises
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
    return tensors, meta


def load_model(directory: str | Path) -> ShopStreamModel:
    """Load a checkpoint written by :func:`save_model` (eval mode); raises
    :class:`ModelFormatError` naming the broken file."""
    tensors, meta = read_checkpoint(directory)
    with _naming_files(directory):
        model = model_from_state(tensors, meta)
    if ENCODER_WEIGHTS_KEY not in meta:
        model.text.recognise_package()  # stored whole (format 1): its next version is small
    return model


def load_checkpoint_into(model: ShopStreamModel, directory: str | Path) -> None:
    """Load the weights of a checkpoint of ``model`` itself (a resumed run) into it."""
    tensors, meta = read_checkpoint(directory)
    with _naming_files(directory):
        load_weights(model, tensors, meta)


@contextmanager
def _naming_files(directory: str | Path) -> Iterator[None]:
    """Prefix a :class:`ModelFormatError` raised inside with the checkpoint's two files."""
    try:
        yield
    except ModelFormatError as err:
        raise ModelFormatError(f"{Path(directory) / WEIGHTS_FILE} / {META_FILE}: {err}") from err
