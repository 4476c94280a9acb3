"""The training stage's settings: one frozen dataclass, validated on construction.

It crosses Ray intact: ``train_loop_config=asdict(cfg)`` on the driver, then
``config_from_dict(TrainConfig, config)`` inside each worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.cli import require
from training.epoch_schedule import EpochSchedule, normalize_schedule

Schedule = Literal["constant", "linear", "cosine"]
Determinism = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class TrainConfig:
    """How one window is trained: optimisation, task weights and batching."""

    epochs: int = field(default=1, metadata={"help": "passes over the window's examples"})
    batch_size: int = field(default=256, metadata={
        "help": "examples per task per step (per worker under Ray Train)"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate of heads and embeddings"})
    encoder_lr: float = field(default=5e-5, metadata={
        "help": "peak learning rate of the fine-tuned text-encoder layers"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_frac: float = field(default=0.1, metadata={
        "help": "fraction of the steps spent warming the learning rate up from 0"})
    schedule: Schedule = field(default="cosine", metadata={
        "help": "learning-rate decay after warm-up: constant, linear or cosine"})
    alpha_rec: float = field(default=1.0, metadata={"help": "weight of the recommendation loss"})
    alpha_fraud: float = field(default=1.0, metadata={"help": "weight of the fraud loss"})
    n_negatives: int = field(default=128, metadata={
        "help": "uniformly sampled catalogue negatives per step, on top of in-batch negatives"})
    id_dropout: float = field(default=0.1, metadata={
        "help": "share of recommendation rows whose user id is hidden from the user tower, "
                "so it also learns to serve a user from the query items alone, as it must "
                "for cold users (DropoutNet, NeurIPS 2017); 0 = off"})
    fraud_pos_weight: float = field(default=5.0, metadata={
        "help": "weight of the positive (fraud) class in the fraud loss"})
    max_steps: int | None = field(default=None, metadata={
        "help": "stop after this many optimizer steps (None: run all epochs)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 disables)"})
    eval_k: int = field(default=20, metadata={"help": "cut-off k of Recall/NDCG/HitRate@k"})
    seed: int = field(default=0, metadata={"help": "seed of shuffling and negative sampling"})
    epoch_schedule: EpochSchedule = field(default=(), metadata={
        "cli": False,
        "help": "per-epoch values (learning rates, loss weights) replayed at each epoch's "
                "start, from a PBT sweep's best trial (configs/best.json); see "
                "training.epoch_schedule"})
    device: str = field(default="auto", metadata={
        "help": "'auto' (CUDA when available), 'cpu' or 'cuda[:N]'"})
    deterministic: Determinism = field(default="auto", metadata={
        "help": "torch's deterministic kernels, so the same data, seed, worker count and "
                "hardware give bit-identical weights: 'auto' = on when training on CPU "
                "(no cost measured there: benchmarks/recorded/determinism.md), off on CUDA "
                "(not measured); 'on' or 'off' everywhere"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "epoch_schedule", normalize_schedule(self.epoch_schedule))
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.encoder_lr >= 0, "encoder_lr", f"must be >= 0, got {self.encoder_lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 <= self.warmup_frac < 1, "warmup_frac", f"must be in [0, 1), got "
                f"{self.warmup_frac}")
        require(self.schedule in ("constant", "linear", "cosine"), "schedule",
                f"must be constant, linear or cosine, got {self.schedule!r}")
        require(self.alpha_rec >= 0 and self.alpha_fraud >= 0, "alpha_rec/alpha_fraud",
                "task weights must be >= 0")
        require(self.alpha_rec + self.alpha_fraud > 0, "alpha_rec/alpha_fraud",
                "at least one task weight must be > 0")
        require(0.0 <= self.id_dropout < 1.0, "id_dropout",
                f"must be in [0, 1), got {self.id_dropout}")
        require(self.n_negatives >= 0, "n_negatives", f"must be >= 0, got {self.n_negatives}")
        require(self.fraud_pos_weight > 0, "fraud_pos_weight", "must be > 0")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(1 <= self.eval_k <= 1000, "eval_k", f"must be in [1, 1000], got {self.eval_k}")
        require(self.device == "auto" or self.device.startswith(("cpu", "cuda")), "device",
                f"must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        require(self.deterministic in ("auto", "on", "off"), "deterministic",
                f"must be auto, on or off, got {self.deterministic!r}")

    @property
    def task_weights(self) -> dict[str, float]:
        return {"rec": self.alpha_rec, "fraud": self.alpha_fraud}
