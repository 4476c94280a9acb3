"""Per-epoch training values: the schedule a PBT sweep found, replayed by later updates.

Population based training changes a trial's learning rates and loss weights between
epochs; what it finds is that *schedule*, not the values the best trial ended with (Ray
Tune's ``PopulationBasedTrainingReplay`` exists for the same reason, ray#9178). A sweep
records each trial's values per epoch (``tuning.trial``), ``configs/best.json`` carries the
best trial's as ``train_config.epoch_schedule``, and the training engine applies entry e at
the start of epoch e (the last entry holds for any later epoch)::

    "epoch_schedule": [{"lr": 0.002, "alpha_fraud": 1.0}, {"lr": 0.0024, "alpha_fraud": 0.8}]

Only values that can change mid-run are allowed (:data:`SCHEDULABLE`). Importing this module
does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from training.cli import ConfigError

# Key -> smallest allowed value (a learning rate must stay > 0).
SCHEDULABLE: dict[str, float] = {"lr": 1e-12, "encoder_lr": 0.0, "weight_decay": 0.0,
                                 "alpha_rec": 0.0, "alpha_fraud": 0.0, "distill_weight": 0.0,
                                 "fraud_pos_weight": 1e-12}
EpochSchedule = tuple[tuple[tuple[str, float], ...], ...]
# Optimizer param-group name -> the schedule key of its learning rate (training.fit.engine).
GROUP_LR = {"heads": "lr", "encoder": "encoder_lr"}


def _entry(raw: Any, epoch: int) -> tuple[tuple[str, float], ...]:
    pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
    out: dict[str, float] = {}
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"epoch_schedule[{epoch}]: expected key/value pairs, got {pair!r}")
        key, value = pair
        if key not in SCHEDULABLE:
            raise ConfigError(f"epoch_schedule[{epoch}].{key}: not a per-epoch setting; "
                              f"expected one of {sorted(SCHEDULABLE)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value < SCHEDULABLE[key]:
            raise ConfigError(f"epoch_schedule[{epoch}].{key}: must be a finite number >= "
                              f"{SCHEDULABLE[key]:g}, got {value!r}")
        out[str(key)] = float(value)
    return tuple(sorted(out.items()))


def normalize_schedule(raw: Any) -> EpochSchedule:
    """A schedule from its JSON (a list of {key: value}) or config form, validated."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping)) or not hasattr(raw, "__iter__"):
        raise ConfigError(f"epoch_schedule: expected a list of per-epoch entries, got {raw!r}")
    return tuple(_entry(item, epoch) for epoch, item in enumerate(raw))


def schedule_json(schedule: EpochSchedule) -> list[dict[str, float]]:
    return [dict(entry) for entry in schedule]


def apply_epoch(schedule: EpochSchedule, epoch: int, objective: Any, optimizer: Any,
                scheduler: Any) -> dict[str, float]:
    """Set epoch ``epoch``'s values on the objective (loss weights), the optimizer's groups
    (weight decay) and the scheduler's peak learning rates; returns what was applied."""
    if not schedule:
        return {}
    values = dict(schedule[min(epoch, len(schedule) - 1)])
    target = getattr(objective, "module", objective)  # DDP wraps the objective
    for task in ("rec", "fraud"):
        if f"alpha_{task}" in values:
            target.alpha[task] = values[f"alpha_{task}"]
    for key in ("distill_weight", "fraud_pos_weight"):
        if key in values:
            setattr(target, key, values[key])
    for i, group in enumerate(optimizer.param_groups):
        if "weight_decay" in values:
            group["weight_decay"] = values["weight_decay"]
        lr_key = GROUP_LR.get(str(group.get("name")))
        if lr_key is None or lr_key not in values:
            continue
        if scheduler is None:
            group["lr"] = values[lr_key]
        else:  # the peak moves; the current step keeps its place in the schedule
            scheduler.base_lrs[i] = values[lr_key]
            group["lr"] = values[lr_key] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    return values
