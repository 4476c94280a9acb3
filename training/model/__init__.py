"""ShopStream multi-task model: recommendation + fraud over a pretrained MiniLM title encoder."""

from training.model.batches import BatchError, FraudBatch, MultiTaskBatch, RecBatch
from training.model.config import ModelConfig
from training.model.io import (
    ModelFormatError,
    config_from_json,
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
