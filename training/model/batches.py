"""Tensor batches the model consumes: one per task, and the pair that one step trains on.

Indices come from :class:`training.model.IdMap`; index 0 is padding / unknown everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class BatchError(ValueError):
    """A batch's tensors have inconsistent shapes; the message names the field."""


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise BatchError(f"{field_name}: {message}")


def _moved(value: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if value is None else value.to(device)


@dataclass
class RecBatch:
    """Next-item examples: ``user_idx`` [B], ``hist_idx`` [B, H] (0 = padding),
    ``target_idx`` [B]; optional ``neg_idx`` [N] sampled negatives shared by the batch.

    Repeat-aware scoring (all optional; absent = zeros): ``rep_items`` [B, R] the user's own
    past items (0 = none) with ``rep_feats`` [B, R, F] their pair features
    (``training.features.profile.REPEAT_FEATURES``) as of the example's snapshot;
    ``target_pop`` [B, P]
    and ``neg_pop`` [N, P] the candidates' popularity features; ``target_logq`` [B] and
    ``neg_logq`` [N] the log-probability of each candidate being sampled as a negative
    (subtracted from the training logits: the logQ correction of sampled softmax).
    ``drop_id`` [B] (bool): rows whose user id the user tower does not see (id dropout; the
    id still says which rows belong to one user).
    """

    user_idx: Tensor
    hist_idx: Tensor
    target_idx: Tensor
    neg_idx: Tensor | None = None
    rep_items: Tensor | None = None
    rep_feats: Tensor | None = None
    target_pop: Tensor | None = None
    neg_pop: Tensor | None = None
    target_logq: Tensor | None = None
    neg_logq: Tensor | None = None
    drop_id: Tensor | None = None

    def __len__(self) -> int:
        return int(self.target_idx.shape[0])

    def validate(self) -> None:
        rows = len(self)
        _check(self.user_idx.shape == (rows,), "user_idx",
               f"expected shape ({rows},), got {tuple(self.user_idx.shape)}")
        _check(self.hist_idx.dim() == 2 and self.hist_idx.shape[0] == rows, "hist_idx",
               f"expected shape ({rows}, H), got {tuple(self.hist_idx.shape)}")
        n_neg = 0
        if self.neg_idx is not None:
            _check(self.neg_idx.dim() == 1, "neg_idx",
                   f"expected shape (N,), got {tuple(self.neg_idx.shape)}")
            n_neg = int(self.neg_idx.shape[0])
        if self.rep_items is not None or self.rep_feats is not None:
            _check(self.rep_items is not None and self.rep_feats is not None, "rep_items",
                   "rep_items and rep_feats go together")
            assert self.rep_items is not None and self.rep_feats is not None
            _check(self.rep_items.dim() == 2 and self.rep_items.shape[0] == rows, "rep_items",
                   f"expected shape ({rows}, R), got {tuple(self.rep_items.shape)}")
            _check(self.rep_feats.dim() == 3
                   and self.rep_feats.shape[:2] == self.rep_items.shape, "rep_feats",
                   f"expected shape {tuple(self.rep_items.shape)} + (F,), got "
                   f"{tuple(self.rep_feats.shape)}")
        for name, size in (("target_pop", rows), ("neg_pop", n_neg),
                           ("target_logq", rows), ("neg_logq", n_neg), ("drop_id", rows)):
            value = getattr(self, name)
            if value is not None:
                _check(value.shape[0] == size, name,
                       f"expected {size} rows, got {tuple(value.shape)}")

    def to(self, device: torch.device | str) -> RecBatch:
        return RecBatch(self.user_idx.to(device), self.hist_idx.to(device),
                        self.target_idx.to(device), _moved(self.neg_idx, device),
                        _moved(self.rep_items, device), _moved(self.rep_feats, device),
                        _moved(self.target_pop, device), _moved(self.neg_pop, device),
                        _moved(self.target_logq, device), _moved(self.neg_logq, device),
                        _moved(self.drop_id, device))


@dataclass
class FraudBatch:
    """Transactions: ``features`` [B, F] raw feature columns (``cfg.fraud_features`` order),
    ``amount`` [B], ``user_idx`` [B] (0 = unknown), ``hist_idx`` [B, H] (the user's recent
    items, 0 = padding), ``item_idx`` [B] (0 = none/unknown), ``label`` [B] (1.0 = fraud),
    ``bought`` [B, 2] (had the user bought anything / this item before the payment's
    window: 1.0, 0.0 or NaN = unknown; the fraud trees' history inputs)."""

    features: Tensor
    amount: Tensor
    user_idx: Tensor
    hist_idx: Tensor
    item_idx: Tensor
    label: Tensor
    bought: Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def validate(self, n_features: int) -> None:
        rows = len(self)
        _check(self.features.shape == (rows, n_features), "features",
               f"expected shape ({rows}, {n_features}) (one column per fraud_features name), "
               f"got {tuple(self.features.shape)}")
        for name in ("amount", "user_idx", "item_idx"):
            shape = tuple(getattr(self, name).shape)
            _check(shape == (rows,), name, f"expected shape ({rows},), got {shape}")
        _check(self.hist_idx.dim() == 2 and self.hist_idx.shape[0] == rows, "hist_idx",
               f"expected shape ({rows}, H), got {tuple(self.hist_idx.shape)}")
        _check(tuple(self.bought.shape) == (rows, 2), "bought",
               f"expected shape ({rows}, 2), got {tuple(self.bought.shape)}")

    def to(self, device: torch.device | str) -> FraudBatch:
        return FraudBatch(self.features.to(device), self.amount.to(device),
                          self.user_idx.to(device), self.hist_idx.to(device),
                          self.item_idx.to(device), self.label.to(device),
                          self.bought.to(device))


@dataclass
class MultiTaskBatch:
    """One training step's data; a task with no data in the step is ``None`` (or 0 rows)."""

    rec: RecBatch | None = None
    fraud: FraudBatch | None = None

    def to(self, device: torch.device | str) -> MultiTaskBatch:
        return MultiTaskBatch(None if self.rec is None else self.rec.to(device),
                              None if self.fraud is None else self.fraud.to(device))
