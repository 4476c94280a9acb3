"""What one step's losses are made of: rec logits over the candidates, fraud-head inputs.

:meth:`ShopStreamModel.step_outputs` returns these so that losses built on top of the plain
task losses (distillation, adversarial training) reuse one forward of the towers instead of a
second one (a second forward before one backward would break DDP's gradient sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class RecLogits:
    """Scores of a rec batch against its candidates: the batch's targets, then ``neg_idx``.

    ``logits`` [B, C] are the fused scores (user·item + popularity term + repeat term) /
    temperature, minus logQ when the batch carries it; unmasked. ``valid`` [B, C] is False where
    a candidate is another copy of the row's own target (no negative), True for the row's
    positive (the diagonal) and its true negatives.
    """

    logits: Tensor
    valid: Tensor

    def masked(self) -> Tensor:
        """``logits`` with the invalid candidates at -inf (what the softmax sees)."""
        return self.logits.masked_fill(~self.valid, float("-inf"))

    def loss(self) -> Tensor:
        """Sampled-softmax cross entropy; row i's positive is candidate i."""
        rows = torch.arange(self.logits.shape[0], device=self.logits.device)
        return F.cross_entropy(self.masked(), rows)


@dataclass
class FraudInputs:
    """The fraud head's inputs: ``numeric`` [B, F+1] normalised [signed_log1p(amount),
    features], ``users`` [B, dim] user vectors, ``item`` [B, dim] projected titles (0 for
    unknown items), and ``label`` [B] (1.0 = fraud)."""

    numeric: Tensor
    users: Tensor
    item: Tensor
    label: Tensor


def fraud_bce(logits: Tensor, label: Tensor, pos_weight: float) -> Tensor:
    """Mean BCE with logits, positives weighted by ``pos_weight``."""
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype), pos_weight=weight)


@dataclass
class StepOutputs:
    """One step's task outputs; a task whose batch is None or empty is None. ``zero`` is a
    0.0 that touches every trainable parameter (see ``ShopStreamModel._zero``)."""

    zero: Tensor
    rec: RecLogits | None = None
    fraud: FraudInputs | None = None
