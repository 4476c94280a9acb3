"""Optimizer state as safetensors + JSON, keyed by parameter name, restorable into a grown model.

Each new window builds a fresh optimizer (``extend_vocab`` replaces the embedding parameters),
so the state is stored by parameter NAME (``"user_emb.weight/exp_avg"``), not by position:
:func:`restore_optimizer_state` finds each parameter again, pads the moments of embedding
tables that gained rows with zeros, and lets parameters it cannot match start fresh.
Hyperparameters (lr, betas, weight decay) are recorded in the meta but come from the fresh
optimizer on restore: the new window's settings and schedule govern it. No pickle.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from training.fit.objective import TrainingObjective

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEPARATOR = "/"
META_KEY = "optimizer_meta"
# The optimizer moments' file in a version, a Ray Train checkpoint and a Tune trial checkpoint.
OPTIMIZER_FILE = "optimizer.safetensors"


class OptimizerStateError(ValueError):
    """Saved optimizer state is unreadable or does not belong to the given optimizer/model."""


def _named_module(model: nn.Module) -> nn.Module:
    """The module whose parameter names are stored: DDP's ``.module`` and a training
    objective's ``.model`` are looked through, so wrapped and plain models share names."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # type: ignore[assignment]
    return model.model if isinstance(model, TrainingObjective) else model


def _param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    """id(param) -> name, for every parameter the optimizer holds."""
    names = {id(p): n for n, p in _named_module(model).named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in names:
                raise OptimizerStateError(
                    f"optimizer holds a parameter of shape {tuple(param.shape)} that is not in "
                    f"the model's named_parameters() (optimizer built for another model?)")
    return names


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, model: nn.Module
                            ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta): every tensor of the per-parameter state as ``"<param name>/<key>"``
    (contiguous CPU copies), and JSON meta: the groups' hyperparameters and parameter names,
    each parameter's shape and step count, and non-tensor state values."""
    names = _param_names(optimizer, model)
    tensors: dict[str, Tensor] = {}
    params: dict[str, Any] = {}
    groups = []
    for group in optimizer.param_groups:
        hyper = {k: _jsonable(v) for k, v in group.items() if k != "params"}
        groups.append({**hyper, "param_names": [names[id(p)] for p in group["params"]]})
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            name = names[id(param)]
            entry: dict[str, Any] = {"shape": list(param.shape), "tensors": [], "values": {}}
            for key, value in state.items():
                if isinstance(value, Tensor):
                    tensors[f"{name}{SEPARATOR}{key}"] = value.detach().to(
                        "cpu", copy=True).contiguous()
                    entry["tensors"].append(key)
                else:
                    entry["values"][key] = _jsonable(value)
            if "step" in state:
                entry["step"] = _jsonable(state["step"])
            params[name] = entry
    meta = {"format_version": FORMAT_VERSION, "optimizer": type(optimizer).__name__,
            "param_groups": groups, "state": params}
    return tensors, meta


def _fit(name: str, saved: dict[str, Tensor], shape: tuple[int, ...]
         ) -> tuple[dict[str, Tensor], bool] | None:
    """The saved state tensors made to fit ``shape``: as is, or zero-padded along dim 0 for a
    table that gained rows; None (start fresh) when they cannot fit."""
    padded = False
    fitted: dict[str, Tensor] = {}
    for key, value in saved.items():
        if value.dim() == 0 or tuple(value.shape) == shape:
            # A copy: the optimizer updates its state in place, and load_state_dict keeps
            # tensors that already have the right device/dtype (step always) as they are.
            fitted[key] = value.clone()
        elif (value.dim() == len(shape) and tuple(value.shape[1:]) == shape[1:]
              and value.shape[0] < shape[0]):
            pad = value.new_zeros((shape[0] - value.shape[0], *shape[1:]))
            fitted[key] = torch.cat([value, pad])
            padded = True
        else:
            logger.warning("optimizer state %s%s%s has shape %s, the parameter has %s: it "
                           "starts fresh", name, SEPARATOR, key, tuple(value.shape), shape)
            return None
    return fitted, padded


def _check_saved(meta: dict[str, Any], optimizer: torch.optim.Optimizer,
                 tensors: dict[str, Tensor]) -> None:
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise OptimizerStateError("meta: expected a JSON object with a 'state' object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise OptimizerStateError(f"meta: format_version {meta.get('format_version')!r} is "
                                  f"not supported (this code reads {FORMAT_VERSION})")
    if meta.get("optimizer") != type(optimizer).__name__:
        raise OptimizerStateError(f"meta: state of a {meta.get('optimizer')} cannot go into a "
                                  f"{type(optimizer).__name__}")
    missing = [f"{name}{SEPARATOR}{key}" for name, entry in meta["state"].items()
               for key in entry.get("tensors", []) if f"{name}{SEPARATOR}{key}" not in tensors]
    if missing:
        raise OptimizerStateError(f"tensors: lack {missing[:5]} named in the meta")


def restore_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module,
                            tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, int]:
    """Load saved state into a freshly built ``optimizer`` of a possibly grown ``model``.

    Returns {"restored": same shape, "padded": grown along dim 0 (new rows' moments are 0),
    "fresh": no usable saved state, "unused": saved parameters the optimizer lacks}.
    """
    _check_saved(meta, optimizer, tensors)
    names = _param_names(optimizer, model)
    counts = dict.fromkeys(("restored", "padded", "fresh", "unused"), 0)
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    index = 0  # state_dict() numbers parameters in param_groups order
    held: set[str] = set()
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            held.add(name)
            entry = meta["state"].get(name)
            fitted = None
            if entry is not None:
                saved = {k: tensors[f"{name}{SEPARATOR}{k}"] for k in entry["tensors"]}
                fitted = _fit(name, saved, tuple(param.shape))
            if fitted is None:
                counts["fresh"] += 1
            else:
                state[index] = {**entry["values"], **fitted[0]}
                counts["padded" if fitted[1] else "restored"] += 1
            index += 1
    counts["unused"] = len(set(meta["state"]) - held)
    state_dict["state"] = state
    # load_state_dict moves each tensor to its parameter's device/dtype (step stays as torch
    # wants it), and the groups' hyperparameters are the fresh optimizer's own.
    optimizer.load_state_dict(state_dict)
    logger.info("optimizer state: %s", counts)
    return counts


def save_optimizer(path: str | Path, optimizer: torch.optim.Optimizer,
                   model: nn.Module) -> dict[str, Any]:
    """Write the state to one safetensors file (meta also in its header); returns the meta."""
    tensors, meta = optimizer_state_tensors(optimizer, model)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    os.replace(tmp, target)
    return meta


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer, model: nn.Module,
                   meta: dict[str, Any] | None = None) -> dict[str, int]:
    """Restore from :func:`save_optimizer`'s file; ``meta`` defaults to the file's header."""
    file = Path(path)
    if not file.is_file():
        raise OptimizerStateError(f"{file}: file is missing")
    try:
        tensors = load_file(str(file))
        if meta is None:
            with safe_open(str(file), framework="pt") as handle:
                header = handle.metadata() or {}
            meta = json.loads(header[META_KEY])
    except (OSError, SafetensorError, ValueError, KeyError) as err:
        raise OptimizerStateError(f"{file}: cannot read optimizer state: {err}") from err
    try:
        return restore_optimizer_state(optimizer, model, tensors, meta)
    except OptimizerStateError as err:
        raise OptimizerStateError(f"{file}: {err}") from err
