"""One training step's whole loss as one module: task losses, distillation, adversarial term.

Everything is computed inside a single ``forward``, so the module can be wrapped in
``DistributedDataParallel`` as is (two forwards before one backward, or calling the inner
model outside the wrapper, would break DDP's gradient sync)::

    objective = TrainingObjective(model, cfg.task_weights, cfg.fraud_pos_weight,
                                  teacher=previous_model, distill_weight=0.5)
    ddp = DistributedDataParallel(objective)
    losses = ddp(batch)          # {"loss", "rec", "fraud", "distill", "adv", ...}
    losses["loss"].backward()

* Distillation keeps the new version close to the previous one (the teacher) on the step's
  own rows: rec, KL(softmax(teacher/T) ‖ softmax(student/T))·T² over the same candidates;
  fraud, the Bernoulli KL between the two fraud probabilities. The teacher is frozen, in eval
  mode and not a submodule: DDP ignores it and ``state_dict`` holds only the student.
* Adversarial training (FGM, or PGD with ``adv_steps > 1``) perturbs the fraud head's numeric
  inputs [log-amount, features] by at most ``adv_epsilon`` (L2, per row) in normalised units
  (1 unit = one ``fraud_std``) towards higher loss, and trains on the perturbed rows too. It
  is off by default (``adv_epsilon=0``) until a benchmark shows it helps fraud metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model import FraudBatch, MultiTaskBatch, ShopStreamModel
from training.model.item_table import FrozenItemTables
from training.model.outputs import FraudInputs, RecLogits, StepOutputs, fraud_bce

logger = logging.getLogger(__name__)

LOSS_KEYS: tuple[str, ...] = ("loss", "rec", "fraud", "distill", "adv", "distill_rec",
                              "distill_fraud")
# PGD step size, relative to epsilon / adv_steps (Madry et al. use 2.5): large enough for the
# iterate to reach the epsilon sphere; with adv_steps=1 the projection makes it exactly FGM.
PGD_STEP_SCALE = 2.5


class ObjectiveError(ValueError):
    """A setting of :class:`TrainingObjective` is unusable; the message names it."""


def _require(condition: bool, setting: str, message: str) -> None:
    if not condition:
        raise ObjectiveError(f"{setting}: {message}")


def unwrap_model(module: nn.Module) -> ShopStreamModel:
    """The ShopStreamModel inside DDP (``.module``) and/or a :class:`TrainingObjective`."""
    while isinstance(getattr(module, "module", None), nn.Module):
        module = module.module  # type: ignore[assignment]
    if isinstance(module, TrainingObjective):
        return module.model
    if not isinstance(module, ShopStreamModel):
        raise TypeError(f"expected a ShopStreamModel, got {type(module).__name__}")
    return module


def clamp_to_vocab(idx: Tensor, size: int) -> Tensor:
    """Indices of a grown vocabulary as a model with its first ``size`` rows sees them:
    ids appended later (index >= size) are unknown, 0."""
    return idx.masked_fill(idx >= size, 0)


def teacher_view(batch: MultiTaskBatch, n_users: int, n_items: int) -> MultiTaskBatch:
    """``batch`` with user indices >= ``n_users`` and item indices >= ``n_items`` set to 0.

    The teacher's vocabularies are a prefix of the student's (``extend_vocab`` only appends),
    so every index below the teacher's sizes names the same id in both models.
    """
    def users(idx: Tensor) -> Tensor:
        return clamp_to_vocab(idx, n_users)

    def items(idx: Tensor) -> Tensor:
        return clamp_to_vocab(idx, n_items)

    rec = fraud = None
    if batch.rec is not None:
        r = batch.rec
        rec = dataclasses.replace(
            r, user_idx=users(r.user_idx), hist_idx=items(r.hist_idx),
            target_idx=items(r.target_idx),
            neg_idx=None if r.neg_idx is None else items(r.neg_idx),
            rep_items=None if r.rep_items is None else items(r.rep_items))
    if batch.fraud is not None:
        f = batch.fraud
        fraud = FraudBatch(f.features, f.amount, users(f.user_idx), items(f.hist_idx),
                           items(f.item_idx), f.label, f.bought)
    return MultiTaskBatch(rec, fraud)


def rec_distill_loss(student: RecLogits, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Mean over rows of KL(softmax(teacher/T) ‖ softmax(student/T))·T² over the student's
    valid candidates (masked ones count for neither)."""
    invalid = ~student.valid
    log_s = F.log_softmax(student.masked() / temperature, dim=1).masked_fill(invalid, 0.0)
    log_t = F.log_softmax(teacher_logits.masked_fill(invalid, float("-inf")) / temperature,
                          dim=1).masked_fill(invalid, 0.0)
    # exp(0) = 1 at masked slots is harmless: it multiplies (0 - 0).
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    return kl.mean() * temperature * temperature


def fraud_distill_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean Bernoulli KL(teacher ‖ student): BCE(student, sigmoid(teacher)) minus the
    teacher's own entropy, so it is 0 when they agree (same gradient as the plain BCE)."""
    target = torch.sigmoid(teacher_logits)
    return (F.binary_cross_entropy_with_logits(student_logits, target)
            - F.binary_cross_entropy_with_logits(teacher_logits, target))


def _unit_rows(x: Tensor) -> Tensor:
    """Each row scaled to L2 norm 1 (rows of zeros stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _project(delta: Tensor, epsilon: float) -> Tensor:
    """Rows of ``delta`` shrunk onto the L2 ball of radius ``epsilon``."""
    norm = delta.norm(dim=1, keepdim=True)
    return delta * (epsilon / norm.clamp(min=epsilon))


def adversarial_delta(model: ShopStreamModel, inputs: FraudInputs, pos_weight: float,
                      epsilon: float, steps: int = 1, first_grad: Tensor | None = None
                      ) -> Tensor:
    """Perturbation [B, F+1] of ``inputs.numeric`` (normalised units), L2 norm <= epsilon per
    row (= epsilon for FGM, ``steps=1``), that raises the fraud loss.

    Gradients are taken with ``torch.autograd.grad`` on the inputs only, so no parameter's
    ``.grad`` (and no DDP hook) is touched. ``first_grad`` is the gradient of the clean loss
    wrt ``inputs.numeric`` when the caller already has it (saves one head forward).
    """
    step = PGD_STEP_SCALE * epsilon / steps
    # Only the direction in input space is wanted: the towers are constants here.
    fixed = FraudInputs(inputs.numeric.detach(), inputs.users.detach(), inputs.item.detach(),
                        inputs.label)
    delta = torch.zeros_like(fixed.numeric)
    grad = first_grad
    with torch.enable_grad():  # also under no_grad (a validation loss)
        for _ in range(steps):
            if grad is None:
                point = delta.clone().requires_grad_(True)
                loss = fraud_bce(model.fraud_head(fixed, fixed.numeric + point), fixed.label,
                                 pos_weight)
                grad = torch.autograd.grad(loss, point)[0]
            delta = _project(delta + step * _unit_rows(grad.detach()), epsilon)
            grad = None
    return delta.detach()


class TrainingObjective(nn.Module):
    """``forward(batch) -> {"loss", "rec", "fraud", "distill", "adv", "distill_rec",
    "distill_fraud"}`` with loss = Σ α_task·L_task + distill_weight·L_distill + α_fraud·L_adv.

    A term that is switched off (``distill_weight == 0`` or no teacher; ``adv_epsilon == 0``)
    is an exact 0 tensor, costs nothing and is not added. ``teacher`` is put in eval mode with
    ``requires_grad`` off, and follows the student's device on the first forward.
    """

    def __init__(self, model: ShopStreamModel, weights: Mapping[str, float],
                 fraud_pos_weight: float = 1.0, teacher: ShopStreamModel | None = None,
                 distill_weight: float = 0.0, distill_temperature: float = 2.0,
                 adv_epsilon: float = 0.0, adv_steps: int = 1) -> None:
        super().__init__()
        try:
            alpha = ShopStreamModel.task_weights(weights)
        except ValueError as err:
            raise ObjectiveError(str(err)) from err
        _require(all(math.isfinite(a) and a >= 0 for a in alpha.values()), "weights",
                 f"task weights must be finite and >= 0, got {alpha}")
        _require(math.isfinite(fraud_pos_weight) and fraud_pos_weight > 0, "fraud_pos_weight",
                 f"must be > 0, got {fraud_pos_weight}")
        _require(math.isfinite(distill_weight) and distill_weight >= 0, "distill_weight",
                 f"must be >= 0, got {distill_weight}")
        _require(math.isfinite(distill_temperature) and distill_temperature > 0,
                 "distill_temperature", f"must be > 0, got {distill_temperature}")
        _require(math.isfinite(adv_epsilon) and adv_epsilon >= 0, "adv_epsilon",
                 f"must be >= 0, got {adv_epsilon}")
        _require(adv_steps >= 1, "adv_steps", f"must be >= 1, got {adv_steps}")
        self.model = model
        self.alpha = alpha
        self.fraud_pos_weight = float(fraud_pos_weight)
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.adv_epsilon = float(adv_epsilon)
        self.adv_steps = int(adv_steps)
        if teacher is not None:
            self._check_teacher(model, teacher)
            teacher.eval().requires_grad_(False)
        # Not a submodule on purpose: DDP must not sync it, state_dict must not hold it.
        self._teacher_ref: tuple[ShopStreamModel, ...] = () if teacher is None else (teacher,)
        # The teacher's item rows do not change during a fit: each is computed once, not
        # every step.
        self.teacher_tables = None if teacher is None else FrozenItemTables(
            teacher.item_table, teacher.item_rows)

    @staticmethod
    def _check_teacher(model: ShopStreamModel, teacher: ShopStreamModel) -> None:
        _require(teacher is not model, "teacher", "must be a frozen copy, not the student")
        _require(teacher.cfg.fraud_features == model.cfg.fraud_features, "teacher",
                 f"fraud_features {list(teacher.cfg.fraud_features)} differ from the "
                 f"student's {list(model.cfg.fraud_features)}")
        for name, mine, theirs in (("users", model.users, teacher.users),
                                   ("items", model.items, teacher.items)):
            ids, old = mine.ids, theirs.ids
            _require(ids[:len(old)] == old, "teacher",
                     f"its {name} vocabulary ({len(old)} ids) is not a prefix of the "
                     f"student's ({len(ids)} ids)")

    @property
    def teacher(self) -> ShopStreamModel | None:
        return self._teacher_ref[0] if self._teacher_ref else None

    @property
    def distilling(self) -> bool:
        return self.distill_weight > 0 and self.teacher is not None

    @property
    def adversarial(self) -> bool:
        return self.adv_epsilon > 0

    def forward(self, batch: MultiTaskBatch) -> dict[str, Tensor]:
        out = self.model.step_outputs(batch)
        none = torch.zeros((), device=out.zero.device)
        losses = dict.fromkeys(LOSS_KEYS, none)
        losses["rec"] = out.rec.loss() if out.rec is not None else out.zero
        losses["fraud"], fraud_logits, numeric = out.zero, None, None
        if out.fraud is not None:
            numeric = out.fraud.numeric
            if self.adversarial:
                # A leaf, so the clean loss's gradient wrt the inputs comes for one head
                # backward; numeric depends on no parameter, so nothing else changes.
                numeric = numeric.detach().requires_grad_(True)
            fraud_logits = self.model.fraud_head(out.fraud, numeric)
            losses["fraud"] = fraud_bce(fraud_logits, out.fraud.label, self.fraud_pos_weight)
        total = (out.zero + self.alpha["rec"] * losses["rec"]
                 + self.alpha["fraud"] * losses["fraud"])
        if self.distilling:
            losses["distill_rec"], losses["distill_fraud"] = self._distill(batch, out,
                                                                          fraud_logits)
            losses["distill"] = losses["distill_rec"] + losses["distill_fraud"]
            total = total + self.distill_weight * losses["distill"]
        if self.adversarial and out.fraud is not None and numeric is not None:
            losses["adv"] = self._adversarial(out.fraud, numeric, losses["fraud"])
            total = total + self.alpha["fraud"] * losses["adv"]
        losses["loss"] = total
        return losses

    def _teacher_on(self, device: torch.device) -> ShopStreamModel:
        teacher = self._teacher_ref[0]
        if teacher.fraud_mean.device != device:
            teacher.to(device)
        return teacher

    def _distill(self, batch: MultiTaskBatch, out: StepOutputs,
                 fraud_logits: Tensor | None) -> tuple[Tensor, Tensor]:
        teacher = self._teacher_on(out.zero.device)
        n_users = min(len(teacher.users), teacher.user_emb.num_embeddings)
        n_items = min(len(teacher.items), teacher.item_emb.num_embeddings)
        with torch.no_grad():
            seen = teacher.step_outputs(teacher_view(batch, n_users, n_items),
                                        item_table=self.teacher_tables)
            teacher_fraud = None if seen.fraud is None else teacher.fraud_head(seen.fraud)
        rec = fraud = torch.zeros((), device=out.zero.device)
        if out.rec is not None and seen.rec is not None:
            rec = rec_distill_loss(out.rec, seen.rec.logits, self.distill_temperature)
        if fraud_logits is not None and teacher_fraud is not None:
            fraud = fraud_distill_loss(fraud_logits, teacher_fraud)
        return rec, fraud

    def _adversarial(self, inputs: FraudInputs, numeric: Tensor, clean: Tensor) -> Tensor:
        grad = None
        if clean.requires_grad:  # no graph under torch.no_grad: adversarial_delta makes one
            # retain_graph: the clean loss is backpropagated again with the total.
            grad = torch.autograd.grad(clean, numeric, retain_graph=True)[0]
        delta = adversarial_delta(self.model, inputs, self.fraud_pos_weight, self.adv_epsilon,
                                  self.adv_steps, first_grad=grad)
        logits = self.model.fraud_head(inputs, inputs.numeric.detach() + delta)
        return fraud_bce(logits, inputs.label, self.fraud_pos_weight)
