"""Gradient-boosted trees on the fraud features, the tabular half of the fraud score.

On tabular inputs (an amount and a few numeric signals) boosted trees are the strongest
known learner, especially with few labelled frauds (Grinsztajn et al., NeurIPS 2022); the
neural head adds what only it sees (who the user is, what they bought, the item's title).
The served fraud probability blends the two in logit space (``ModelConfig.
fraud_tree_weight``, chosen per update on held-out labels: ``training.update.fraud_blend``).

The trees are LightGBM's, stored as LightGBM's own text model format inside the model's
JSON (``model.json``), never pickled; parameters mirror the report's
``HistGradientBoostingClassifier(l2_regularization=1.0)`` baseline (100 rounds of 31
leaves at learning rate 0.1, 20 rows per leaf, L2 1.0, early stopping on a 10% split from
10,000 rows), so the comparison is of inputs and blending, not of tree settings.

Their inputs are the amount, the shop's fraud features and two flags from the user's
purchase history (:data:`HISTORY_COLUMNS`, ``FraudBatch.bought``): had the user bought
anything, and this item, before the payment's window
(``training.features.bought_before``). A payment from an account with no purchase
history is the classic profile signal of fraud (the Fraud Detection Handbook's customer
features); the baseline, fitted on the table's columns alone, lacks it. Trees stored
before these columns score with the inputs they were fitted on
(:attr:`FraudTrees.uses_history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# The order of the trees' input columns: the amount, then ModelConfig.fraud_features, then
# HISTORY_COLUMNS (FraudBatch.bought).
AMOUNT_COLUMN = "amount"
HISTORY_COLUMNS: tuple[str, ...] = ("bought_before", "bought_item_before")
EARLY_STOPPING_FROM = 10_000
PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 20,
    "lambda_l2": 1.0, "max_bin": 255, "deterministic": True, "force_row_wise": True,
    "verbosity": -1, "num_threads": 1,
}
ROUNDS = 100


class FraudTreesError(ValueError):
    """Stored trees that cannot be read, or inputs of the wrong width; names the field."""


def tree_inputs(amount: np.ndarray, features: np.ndarray,
                bought: np.ndarray | None = None) -> np.ndarray:
    """[n, 1 + F (+ 2)] float64: the amount, the fraud features (raw units: trees need no
    scaling, and an extreme but finite value just falls in the last bin), then the
    :data:`HISTORY_COLUMNS` flags ``bought`` [n, 2] when given (NaN: unknown, which the
    trees treat as missing)."""
    amount = np.asarray(amount, dtype=np.float64).reshape(-1, 1)
    features = np.asarray(features, dtype=np.float64).reshape(len(amount), -1)
    parts = [amount, features]
    if bought is not None:
        parts.append(np.asarray(bought, dtype=np.float64).reshape(len(amount), 2))
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class FraudTrees:
    """A fitted booster (LightGBM text format) and the input columns it was fitted on."""

    text: str
    columns: tuple[str, ...]
    rows: int
    frauds: int

    @property
    def uses_history(self) -> bool:
        """Whether the trees were fitted with :data:`HISTORY_COLUMNS` (versions before them
        were not, and keep scoring on the amount and features alone)."""
        return self.columns[-len(HISTORY_COLUMNS):] == HISTORY_COLUMNS

    @classmethod
    def fit(cls, inputs: np.ndarray, labels: np.ndarray, columns: tuple[str, ...],
            seed: int) -> FraudTrees | None:
        """Trees on ``inputs`` (:func:`tree_inputs`); None when the labels hold one class
        (nothing to learn)."""
        import lightgbm as lgb  # imported on use: serving replicas without trees skip it

        y = np.asarray(labels, dtype=bool)
        if len(y) == 0 or y.all() or not y.any():
            return None
        if inputs.shape[1] != len(columns):
            raise FraudTreesError(f"columns: {len(columns)} names for {inputs.shape[1]} inputs")
        params = {**PARAMS, "seed": seed}
        train, valid = np.arange(len(y)), None
        if len(y) >= EARLY_STOPPING_FROM and y.sum() >= 20:
            order = np.random.default_rng(seed).permutation(len(y))
            cut = len(y) // 10
            valid, train = order[:cut], order[cut:]
        data = lgb.Dataset(inputs[train], y[train].astype(np.float64), params=params)
        sets: list[Any] = []
        callbacks: list[Any] = []
        if valid is not None:
            sets = [lgb.Dataset(inputs[valid], y[valid].astype(np.float64), reference=data)]
            callbacks = [lgb.early_stopping(10, verbose=False)]
        booster = lgb.train(params, data, ROUNDS, valid_sets=sets, callbacks=callbacks)
        return cls(booster.model_to_string(num_iteration=booster.best_iteration or None),
                   tuple(columns), int(len(y)), int(y.sum()))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds of fraud) [n] for :func:`tree_inputs` rows."""
        if inputs.ndim != 2 or inputs.shape[1] != len(self.columns):
            raise FraudTreesError(f"inputs: expected {len(self.columns)} columns "
                                  f"{list(self.columns)}, got shape {inputs.shape}")
        if len(inputs) == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.booster.predict(inputs, raw_score=True, num_threads=1),
                          dtype=np.float64)

    @cached_property
    def booster(self) -> Any:
        """The parsed LightGBM booster (parsed once; kept out of the frozen fields)."""
        import lightgbm as lgb

        return lgb.Booster(model_str=self.text)

    def to_json(self) -> dict[str, Any]:
        return {"format": "lightgbm-text", "columns": list(self.columns), "rows": self.rows,
                "frauds": self.frauds, "model": self.text}

    @classmethod
    def from_json(cls, value: object) -> FraudTrees:
        """Rebuild from :meth:`to_json`; the booster is parsed now, so a damaged model fails
        at load with :class:`FraudTreesError`, not at the first request."""
        if not isinstance(value, dict) or value.get("format") != "lightgbm-text":
            raise FraudTreesError("fraud_trees: expected an object with format 'lightgbm-text'")
        columns, text = value.get("columns"), value.get("model")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
                or not isinstance(text, str):
            raise FraudTreesError("fraud_trees: 'columns' must be a list of names and 'model' "
                                  "a string")
        trees = cls(text, tuple(columns), int(value.get("rows", 0)),
                    int(value.get("frauds", 0)))
        try:
            booster = trees.booster
        except Exception as exc:  # LightGBM raises its own LightGBMError on a bad model
            raise FraudTreesError(f"fraud_trees.model: not a LightGBM model: {exc}") from exc
        if booster.num_feature() != len(columns):
            raise FraudTreesError(f"fraud_trees.columns: {len(columns)} names for a model of "
                                  f"{booster.num_feature()} inputs")
        return trees
