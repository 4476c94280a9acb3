"""ShopStream multi-task model: recommendation + fraud over a pretrained MiniLM title encoder.

The names below load on first use (PEP 562): importing :mod:`training.model.config` (every
stage's ``--help`` does) must not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it
_HOMES: dict[str, str] = {
    **dict.fromkeys(("BatchError", "FraudBatch", "MultiTaskBatch", "RecBatch"), "batches"),
    "ModelConfig": "config",
    **dict.fromkeys(("ModelFormatError", "config_from_json", "copy_model", "load_model",
                     "model_from_state", "model_state", "save_model"), "io"),
    **dict.fromkeys(("TASKS", "ShopStreamModel", "fraud_input_matrix", "fraud_stats",
                     "item_title_list", "signed_log1p"), "multitask"),
    **dict.fromkeys(("TextEncoder", "encoder_package_path", "mean_pool"), "text"),
    "project_titles": "titles",
    **dict.fromkeys(("UNKNOWN_INDEX", "IdMap", "IdMapError"), "vocab"),
}

__all__ = [
    "TASKS",
    "UNKNOWN_INDEX",
    "BatchError",
    "FraudBatch",
    "IdMap",
    "IdMapError",
    "ModelConfig",
    "ModelFormatError",
    "MultiTaskBatch",
    "RecBatch",
    "ShopStreamModel",
    "TextEncoder",
    "config_from_json",
    "copy_model",
    "encoder_package_path",
    "fraud_input_matrix",
    "fraud_stats",
    "item_title_list",
    "load_model",
    "mean_pool",
    "model_from_state",
    "model_state",
    "project_titles",
    "save_model",
    "signed_log1p",
]

if TYPE_CHECKING:
    from training.model.batches import BatchError, FraudBatch, MultiTaskBatch, RecBatch
    from training.model.config import ModelConfig
    from training.model.io import (
        ModelFormatError,
        config_from_json,
        copy_model,
        load_model,
        model_from_state,
        model_state,
        save_model,
    )
    from training.model.multitask import (
        TASKS,
        ShopStreamModel,
        fraud_input_matrix,
        fraud_stats,
        item_title_list,
        signed_log1p,
    )
    from training.model.text import TextEncoder, encoder_package_path, mean_pool
    from training.model.titles import project_titles
    from training.model.vocab import UNKNOWN_INDEX, IdMap, IdMapError


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
