"""The fraud task of :class:`training.model.multitask.ShopStreamModel`: the head's inputs,
its logits, the blended (neural + trees) and calibrated probability, and the loss.

A mixin over the model's modules and buffers (created in ``ShopStreamModel.__init__``, so
the state dict is the model's): it keeps the fraud task in one file and the model class
under one screen of towers and ranking.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from training.model.batches import FraudBatch
from training.model.calibration import FraudCalibration
from training.model.config import ModelConfig
from training.model.features import MIN_STD, signed_log1p
from training.model.fraud_trees import FraudTrees, tree_inputs
from training.model.item_table import ItemTable
from training.model.outputs import FraudInputs, fraud_bce

# Bound of the fraud head's standardised inputs (see FraudHead._fraud_inputs).
MAX_ABS_Z = 1e4


def _as_vector(values: np.ndarray | Tensor) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().float().cpu().reshape(-1)
    return torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)


class FraudHead:
    """Fraud methods of the model; the attributes below are set by the model's ``__init__``."""

    cfg: ModelConfig
    fraud_mlp: nn.Sequential
    fraud_mean: Tensor
    fraud_std: Tensor
    fraud_trees: FraudTrees | None
    fraud_calibration: FraudCalibration

    def item_table(self, idx: Tensor) -> ItemTable:
        raise NotImplementedError

    def _user_vectors(self, user_idx: Tensor, hist_idx: Tensor, table: ItemTable) -> Tensor:
        raise NotImplementedError

    def _zero(self) -> Tensor:
        raise NotImplementedError

    def _fraud_inputs(self, batch: FraudBatch, table: ItemTable) -> FraudInputs:
        numeric = torch.cat([signed_log1p(batch.amount.float())[:, None],
                             batch.features.float()], dim=1)
        # Winsorised: a value beyond MAX_ABS_Z standard deviations carries no more evidence,
        # and an extreme one (a float32-finite 3.4e38) would overflow the MLP to NaN.
        numeric = ((numeric - self.fraud_mean) / self.fraud_std).clamp(-MAX_ABS_Z, MAX_ABS_Z)
        users = self._user_vectors(batch.user_idx, batch.hist_idx, table)
        item = table.text_rows(batch.item_idx) * (batch.item_idx != 0)[:, None].to(users.dtype)
        return FraudInputs(numeric, users, item, batch.label)

    def fraud_inputs(self, batch: FraudBatch, table: ItemTable | None = None) -> FraudInputs:
        """The fraud head's inputs for ``batch``; ``table`` (e.g. serving's precomputed one)
        saves encoding the titles."""
        batch.validate(len(self.cfg.fraud_features))
        if table is None:
            table = self.item_table(self._fraud_items(batch))
        return self._fraud_inputs(batch, table)

    def fraud_head(self, inputs: FraudInputs, numeric: Tensor | None = None) -> Tensor:
        """Fraud logits [B] from the head's inputs; ``numeric`` (normalised units) replaces
        ``inputs.numeric``, e.g. adversarially perturbed."""
        numeric = inputs.numeric if numeric is None else numeric
        return self.fraud_mlp(torch.cat([numeric, inputs.users, inputs.item], dim=1)).squeeze(-1)

    def fraud_logits(self, batch: FraudBatch) -> Tensor:
        """Fraud logits [B] (sigmoid = probability of fraud)."""
        batch.validate(len(self.cfg.fraud_features))
        table = self.item_table(self._fraud_items(batch))
        return self.fraud_head(self._fraud_inputs(batch, table))

    def set_fraud_trees(self, trees: FraudTrees | None, weight: float) -> None:
        """Blend ``trees`` into the fraud score with ``weight`` from now on (recorded in
        the config); ``None`` (or weight 0) scores with the neural head alone."""
        self.fraud_trees = trees
        self.cfg = dataclasses.replace(self.cfg, fraud_tree_weight=float(
            weight if trees is not None else 0.0))

    def set_fraud_calibration(self, calibration: FraudCalibration) -> None:
        """Map the blended probability through ``calibration`` from now on."""
        self.fraud_calibration = calibration

    @torch.no_grad()
    def fraud_probability(self, batch: FraudBatch, table: ItemTable | None = None) -> Tensor:
        """The served fraud probability [B]: the neural head's logit and the trees' (when
        fitted) blended in logit space by ``cfg.fraud_tree_weight``, then calibrated
        (``fraud_calibration``). The one scoring function of evaluation, the gate's
        thresholds and serving."""
        blended = self.blended_fraud_probability(batch, table)
        # float64: an isotonic map keeps order by a slope of 1e-4 between its knots, which
        # float32 would round into ties (and so change AUC-PR and the alert queue).
        if self.fraud_calibration.kind == "identity":
            return blended.double()
        return torch.from_numpy(self.fraud_calibration.apply(blended.cpu().numpy())).to(
            blended.device)

    @torch.no_grad()
    def blended_fraud_probability(self, batch: FraudBatch, table: ItemTable | None = None
                                  ) -> Tensor:
        """The fraud probability before calibration (what the calibration is fitted to)."""
        logits = self.fraud_head(self.fraud_inputs(batch, table)).float()
        weight = self.cfg.fraud_tree_weight
        if self.fraud_trees is not None and weight > 0.0:
            bought = batch.bought.cpu().numpy() if self.fraud_trees.uses_history else None
            inputs = tree_inputs(batch.amount.cpu().numpy(), batch.features.cpu().numpy(),
                                 bought)
            trees = torch.from_numpy(self.fraud_trees.logits(inputs)).to(logits)
            logits = (1.0 - weight) * logits + weight * trees
        return torch.sigmoid(logits)

    def fraud_loss(self, batch: FraudBatch, pos_weight: float = 1.0) -> Tensor:
        """BCE with logits (positives weighted by ``pos_weight``); 0 for an empty batch."""
        batch.validate(len(self.cfg.fraud_features))
        if len(batch) == 0:
            return self._zero()
        return fraud_bce(self.fraud_logits(batch), batch.label, pos_weight)

    @staticmethod
    def _fraud_items(batch: FraudBatch) -> Tensor:
        return torch.cat([batch.hist_idx.reshape(-1), batch.item_idx])

    def set_fraud_stats(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor) -> None:
        """Normalisation of [signed_log1p(amount), features] (see :func:`fraud_stats`)."""
        n_in = self.fraud_mean.shape[0]
        mean_t, std_t = _as_vector(mean), _as_vector(std)
        for name, value in (("fraud_mean", mean_t), ("fraud_std", std_t)):
            if value.shape != (n_in,):
                raise ValueError(f"{name}: expected {n_in} values (amount + "
                                 f"{n_in - 1} fraud_features), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: values must be finite")
        with torch.no_grad():
            self.fraud_mean.copy_(mean_t)
            self.fraud_std.copy_(std_t.clamp(min=MIN_STD))
