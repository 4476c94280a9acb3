"""The sweep's search space, declared once as a typed, frozen config.

Every field of :class:`SearchSpace` is named after the setting it tunes: a field of
:class:`training.config.TrainConfig` or one of the tunable fields of
:class:`training.incremental_config.IncrementalConfig` (``TUNABLE_INCREMENTAL``). A field
holds a :class:`Dim` (how to sample it) or ``None`` (not searched: the base flag/default is
used). The defaults search the task weight (α_fraud on a log scale, α_rec fixed), the peak
learning rate, the warm-up fraction, the decay shape, the distillation weight and the
replay ratio. A JSON file overrides fields::

    {"lr": {"loguniform": [1e-4, 3e-2]}, "schedule": {"choice": ["linear", "cosine"]},
     "replay_ratio": null, "weight_decay": {"uniform": [0.0, 0.1]}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.cli import ConfigError
from training.config import TrainConfig
from training.incremental_config import TUNABLE_INCREMENTAL, IncrementalConfig

DimKind = Literal["uniform", "loguniform", "choice"]
DIM_KINDS: tuple[str, ...] = ("uniform", "loguniform", "choice")
TRAIN_KEYS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(TrainConfig))
# Keys PBT may perturb mid-trial: any positive multiple of a valid value stays valid, and
# none of them changes which rows are trained on (replay_ratio would).
PBT_MUTABLE: tuple[str, ...] = ("lr", "encoder_lr", "alpha_rec", "alpha_fraud",
                                "weight_decay", "distill_weight", "fraud_pos_weight")


class SearchSpaceError(ConfigError):
    """The search space is unusable; the message names the offending key."""


class EmptySearchSpaceError(SearchSpaceError):
    """Every dimension of the search space is switched off."""


class UnknownSearchKeyError(SearchSpaceError):
    """A key names no searchable setting of the training config."""


@dataclass(frozen=True)
class Dim:
    """One searched setting: ``uniform``/``loguniform`` over [low, high], or a ``choice``."""

    kind: DimKind
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()

    def check(self, key: str) -> None:
        if self.kind not in DIM_KINDS:
            raise SearchSpaceError(f"{key}: kind {self.kind!r} is not one of {DIM_KINDS}")
        if self.kind == "choice":
            if not self.values or len(set(self.values)) != len(self.values):
                raise SearchSpaceError(f"{key}: a choice needs distinct values, got "
                                       f"{list(self.values)}")
            return
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SearchSpaceError(f"{key}: needs finite low < high, got [{self.low}, "
                                   f"{self.high}]")
        if self.kind == "loguniform" and self.low <= 0:
            raise SearchSpaceError(f"{key}: loguniform needs low > 0, got {self.low}")

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what a trial can get (each is validated by the config)."""
        return self.values if self.kind == "choice" else (self.low, self.high)

    def to_tune(self) -> Any:
        from ray import tune  # here, so the space is usable (and testable) without Ray

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.uniform(self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.values)}
        return {self.kind: [self.low, self.high]}

    @classmethod
    def from_json(cls, key: str, value: Any) -> Dim:
        if not isinstance(value, dict) or len(value) != 1:
            raise SearchSpaceError(f"{key}: expected {{\"uniform\"|\"loguniform\": [low, high]}}"
                                   f", {{\"choice\": [...]}} or null, got {value!r}")
        (kind, arg), = value.items()
        if kind == "choice" and isinstance(arg, list):
            return cls("choice", values=tuple(arg))
        if kind in ("uniform", "loguniform") and isinstance(arg, list) and len(arg) == 2 \
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in arg):
            return cls(kind, float(arg[0]), float(arg[1]))
        raise SearchSpaceError(f"{key}: cannot read {value!r} as a dimension")


def uniform(low: float, high: float) -> Dim:
    return Dim("uniform", low, high)


def loguniform(low: float, high: float) -> Dim:
    return Dim("loguniform", low, high)


def choice(*values: Any) -> Dim:
    return Dim("choice", values=tuple(values))


def _dim(default: Dim | None, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep samples; each field is a TrainConfig / tunable IncrementalConfig key."""

    alpha_fraud: Dim | None = _dim(loguniform(0.1, 10.0),
                                   "weight of the fraud loss (alpha_rec stays fixed)")
    alpha_rec: Dim | None = _dim(None, "weight of the recommendation loss (fixed by default)")
    lr: Dim | None = _dim(loguniform(3e-4, 1e-2), "peak learning rate of heads and embeddings")
    encoder_lr: Dim | None = _dim(None, "peak learning rate of fine-tuned encoder layers")
    weight_decay: Dim | None = _dim(None, "AdamW weight decay")
    warmup_frac: Dim | None = _dim(uniform(0.0, 0.3), "fraction of steps spent warming up")
    schedule: Dim | None = _dim(choice("constant", "linear", "cosine"),
                                "learning-rate decay shape after warm-up")
    fraud_pos_weight: Dim | None = _dim(None, "weight of the positive class in the fraud loss")
    distill_weight: Dim | None = _dim(uniform(0.0, 1.0),
                                      "weight of distillation from the previous version")
    distill_temperature: Dim | None = _dim(None, "distillation temperature")
    replay_ratio: Dim | None = _dim(uniform(0.0, 0.5),
                                    "replayed rows mixed in, as a fraction of the new rows")
    adv_epsilon: Dim | None = _dim(None, "FGM/PGD radius on fraud features (0: off)")

    def __post_init__(self) -> None:
        for key in self.keys():
            check_key(key)
        for key, dim in self.dims().items():
            if not isinstance(dim, Dim):
                raise SearchSpaceError(f"{key}: expected a Dim or None, got "
                                       f"{type(dim).__name__}")
            dim.check(key)
            for value in dim.extremes():
                _check_value(key, value)
        if not self.dims():
            raise EmptySearchSpaceError(
                "search space: every dimension is off; search at least one of "
                f"{sorted(self.keys())}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def dims(self) -> dict[str, Dim]:
        """The searched keys and how each is sampled."""
        return {k: getattr(self, k) for k in self.keys() if getattr(self, k) is not None}

    def train_keys(self) -> list[str]:
        return [k for k in self.dims() if k in TRAIN_KEYS]

    def incremental_keys(self) -> list[str]:
        return [k for k in self.dims() if k in TUNABLE_INCREMENTAL]

    def to_tune(self) -> dict[str, Any]:
        """Tune's ``param_space``."""
        return {k: d.to_tune() for k, d in self.dims().items()}

    def pbt_mutations(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """PBT's ``hyperparam_mutations`` for ``keys`` (each must be searched and mutable)."""
        for key in keys:
            check_key(key)
            if key not in PBT_MUTABLE:
                raise SearchSpaceError(f"pbt_mutate: {key} cannot change mid-trial; "
                                       f"mutable keys: {list(PBT_MUTABLE)}")
            if key not in self.dims():
                raise SearchSpaceError(f"pbt_mutate: {key} is not searched in the space "
                                       f"(searched: {sorted(self.dims())})")
        return {k: self.dims()[k].to_tune() for k in keys}

    def check_flags(self, given: set[str] | frozenset[str]) -> None:
        """Settings given as flags must not be searched too (the sample would silently win)."""
        clash = sorted(set(given) & set(self.dims()))
        if clash:
            raise SearchSpaceError(
                f"{clash[0]}: given as a flag but also searched; drop the flag, or fix it by "
                f'setting {{"{clash[0]}": null}} in --space-file (searched: {clash})')
        if "epochs" in given:
            raise SearchSpaceError("epochs: trials train --max-epochs epochs (the horizon of "
                                   "the learning-rate schedule); use --max-epochs")

    def to_json(self) -> dict[str, Any]:
        return {k: None if d is None else d.to_json()
                for k, d in ((k, getattr(self, k)) for k in self.keys())}

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: SearchSpace | None = None) -> SearchSpace:
        """``base`` (the defaults) with the given keys replaced; unknown keys are errors."""
        for key in values:
            check_key(key)
            if key not in cls.keys():
                raise UnknownSearchKeyError(
                    f"{key}: a real setting, but not searchable; searchable keys: "
                    f"{list(cls.keys())}")
        dims = {k: None if v is None else Dim.from_json(k, v) for k, v in values.items()}
        return dataclasses.replace(base or cls(), **dims)

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        file = Path(path)
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SearchSpaceError(f"space_file: cannot read {file}: {err}") from err
        if not isinstance(doc, dict):
            raise SearchSpaceError(f"space_file: {file} must hold a JSON object")
        return cls.from_dict(doc)


def check_key(key: str) -> None:
    """Raise :class:`UnknownSearchKeyError` unless ``key`` is a tunable config field."""
    if key not in TRAIN_KEYS and key not in TUNABLE_INCREMENTAL:
        raise UnknownSearchKeyError(
            f"{key}: not a field of TrainConfig nor a tunable IncrementalConfig field "
            f"(tunable: {sorted(TRAIN_KEYS)} + {list(TUNABLE_INCREMENTAL)})")


def _check_value(key: str, value: Any) -> None:
    """A bound of the dimension must itself be a valid setting (e.g. warmup_frac < 1)."""
    try:
        if key in TRAIN_KEYS:
            TrainConfig(**{key: value})
        else:
            IncrementalConfig.of(**{key: value})
    except ConfigError as err:
        raise SearchSpaceError(f"{key}: the space reaches {value!r}, which the config "
                               f"rejects ({err})") from err
    except TypeError as err:
        raise SearchSpaceError(f"{key}: value {value!r} has the wrong type ({err})") from err
