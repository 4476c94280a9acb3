"""The fraud trees: fitted on labelled rows, blended with the neural head by a held-out
choice, saved inside the model's JSON (no pickle) and served through the one scoring
function."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.published import shop_history, shop_model
from training.evaluation.evaluate import fraud_scores
from training.evaluation.fraud_metrics import fraud_metrics
from training.features.examples import fraud_examples
from training.model import ModelConfig, ModelFormatError, ShopStreamModel, load_model, save_model
from training.model.fraud_trees import AMOUNT_COLUMN, HISTORY_COLUMNS, FraudTrees, tree_inputs
from training.update.fraud_blend import (
    BLEND_GRID,
    FALLBACK_TREE_WEIGHT,
    MIN_BLEND_FRAUDS,
    fit_trees,
    fraud_blend,
    known_transactions,
    refit_trees,
)

pytestmark = pytest.mark.unit

CFG = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3)


def txns(n: int, seed: int, fraud_rate: float | None = None) -> pd.DataFrame:
    """Fraud iff a large amount at night (``fraud_rate`` instead: random labels)."""
    rng = np.random.default_rng(seed)
    amount = rng.uniform(1, 100, n)
    night = rng.integers(0, 2, n).astype(float)
    label = (amount > 70) & (night == 1) if fraud_rate is None else rng.random(n) < fraud_rate
    return pd.DataFrame({
        "txn_id": [f"t{seed}-{i}" for i in range(n)], "user_id": [f"u{i % 12}" for i in range(n)],
        "item_id": [f"i{i % 20}" for i in range(n)], "ts": pd.Timestamp("2024-02-01", tz="UTC"),
        "amount": amount, "is_fraud": label, "night": night,
        "new_device": rng.integers(0, 2, n).astype(float), "distance": rng.gamma(2.0, 5.0, n)})


@pytest.fixture
def model() -> ShopStreamModel:
    return shop_model(12, 20, CFG)


def ap(model: ShopStreamModel, frame: pd.DataFrame) -> float:
    examples = fraud_examples(model, frame, shop_history(model))
    return fraud_metrics(examples.label.astype(bool), fraud_scores(model, examples))["auc_pr"]


def test_trees_learn_a_tabular_rule_and_survive_a_checkpoint(model: ShopStreamModel,
                                                             tmp_path: Path) -> None:
    history, test = shop_history(model), txns(400, 1)
    neural = ap(model, test)
    trees = fit_trees(model, txns(600, 0), history, seed=0)
    assert trees is not None and trees.rows == 600 and trees.columns[0] == "amount"
    model.set_fraud_trees(trees, 1.0)
    assert ap(model, test) > 0.95 > neural + 0.3
    save_model(model, tmp_path)
    stored = json.loads((tmp_path / "model.json").read_text())["fraud_trees"]
    assert stored["format"] == "lightgbm-text" and stored["model"].startswith("tree")
    back = load_model(tmp_path)
    assert back.cfg.fraud_tree_weight == 1.0 and back.fraud_trees is not None
    examples = fraud_examples(model, test, history)
    np.testing.assert_allclose(fraud_scores(back, examples), fraud_scores(model, examples),
                               rtol=1e-6)
    # Half and half is the logit average of the two parts.
    model.set_fraud_trees(trees, 0.5)
    blended = fraud_scores(model, examples)
    model.set_fraud_trees(None, 0.5)
    assert model.cfg.fraud_tree_weight == 0.0
    logit = np.log(fraud_scores(model, examples)) - np.log1p(-fraud_scores(model, examples))
    tree_logit = trees.logits(tree_inputs(examples.amount, examples.features, examples.bought))
    np.testing.assert_allclose(blended, 1 / (1 + np.exp(-(logit + tree_logit) / 2)), rtol=1e-4)


def test_tree_inputs_append_the_history_flags_unknown_as_nan() -> None:
    bought = np.array([[1.0, 0.0], [np.nan, np.nan]], dtype=np.float32)
    rows = tree_inputs(np.ones(2), np.zeros((2, 3)), bought)
    assert rows.shape == (2, 6) and rows.dtype == np.float64 and np.isnan(rows[1, 4:]).all()
    assert tree_inputs(np.ones(2), np.zeros((2, 3))).shape == (2, 4)


def no_history_fraud(n: int, seed: int) -> pd.DataFrame:
    """Fraud iff the paying account has no purchase history (``x..`` users); every other
    column is noise, so only the history columns can tell."""
    frame = txns(n, seed, fraud_rate=0.0)
    stranger = np.random.default_rng(seed + 100).random(n) < 0.2
    users = np.where(stranger, [f"x{i}" for i in range(n)], frame["user_id"])
    return frame.assign(user_id=users, is_fraud=stranger)


def test_the_trees_learn_from_the_users_purchase_history(model: ShopStreamModel,
                                                         tmp_path: Path) -> None:
    history, train, test = shop_history(model), no_history_fraud(600, 0), no_history_fraud(400, 1)
    trees = fit_trees(model, train, history, seed=0)
    assert trees is not None and trees.uses_history
    assert trees.columns == (AMOUNT_COLUMN, *model.cfg.fraud_features, *HISTORY_COLUMNS)
    model.set_fraud_trees(trees, 1.0)
    assert ap(model, test) > 0.99
    # The same rows without the history columns (the trees before them) rank at chance.
    examples = fraud_examples(model, train, history)
    blind = FraudTrees.fit(tree_inputs(examples.amount, examples.features),
                           examples.label.astype(bool), trees.columns[:-2], seed=0)
    assert blind is not None and not blind.uses_history
    model.set_fraud_trees(blind, 1.0)
    assert ap(model, test) < 0.4
    # Trees stored before the history columns load and score on the inputs they know.
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    assert back.fraud_trees is not None and not back.fraud_trees.uses_history
    held = fraud_examples(back, test, history)
    expected = 1 / (1 + np.exp(-blind.logits(tree_inputs(held.amount, held.features))))
    np.testing.assert_allclose(fraud_scores(back, held), expected, rtol=1e-5)


def test_damaged_trees_are_a_named_format_error(model: ShopStreamModel, tmp_path: Path) -> None:
    model.set_fraud_trees(fit_trees(model, txns(300, 0), shop_history(model), 0), 1.0)
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["fraud_trees"]["model"] = "not a booster"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="fraud_trees"):
        load_model(tmp_path)
    meta["fraud_trees"] = {"format": "pickle"}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="lightgbm-text"):
        load_model(tmp_path)


def test_the_blend_weight_is_chosen_on_held_out_frauds(model: ShopStreamModel) -> None:
    history = shop_history(model)
    holdout = txns(400, 2)
    assert int(holdout["is_fraud"].sum()) >= MIN_BLEND_FRAUDS
    choice = fraud_blend(model, txns(600, 0), holdout, history, seed=0)
    assert set(choice["auc_pr"]) == {str(w) for w in BLEND_GRID}
    # The random neural head carries no signal here: the best weights are the tree-heavy ones.
    assert choice["tree_weight"] >= 0.75 and choice["auc_pr"]["0.0"] < 0.6
    assert choice["auc_pr"][str(choice["tree_weight"])] == max(choice["auc_pr"].values())
    assert model.cfg.fraud_tree_weight == choice["tree_weight"]


def test_few_frauds_fall_back_and_one_class_fits_no_trees(model: ShopStreamModel) -> None:
    history = shop_history(model)
    few = txns(400, 2).head(60)
    few = few.assign(is_fraud=few["is_fraud"] & (np.arange(len(few)) < 30))
    assert 0 < few["is_fraud"].sum() < MIN_BLEND_FRAUDS
    choice = fraud_blend(model, txns(600, 0), few, history, seed=0)
    assert choice["tree_weight"] == FALLBACK_TREE_WEIGHT and "fallback" in choice["basis"]
    legit = txns(300, 0).assign(is_fraud=False)
    choice = fraud_blend(model, legit, txns(100, 2), history, seed=0)
    assert choice["trees"] is None and model.fraud_trees is None
    assert model.cfg.fraud_tree_weight == 0.0


def test_known_transactions_keep_each_labelled_row_once() -> None:
    a, b = txns(10, 0), txns(10, 1)
    b["is_fraud"] = b["is_fraud"].astype(object)
    b.loc[0, "is_fraud"] = None
    rows = known_transactions(a, pd.concat([a.head(3), b]))
    assert len(rows) == 19 and rows["txn_id"].is_unique


def test_judging_rows_are_kept_out_then_the_refit_uses_every_row(model: ShopStreamModel) -> None:
    history, train, tail = shop_history(model), txns(600, 0), txns(200, 3)
    kept = known_transactions(train, exclude=train.head(50))
    assert len(kept) == 550 and not set(train.head(50)["txn_id"]) & set(kept["txn_id"])
    fraud_blend(model, kept, tail, history, seed=0)
    weight = model.cfg.fraud_tree_weight
    refit_trees(model, known_transactions(train, tail), history, seed=0)
    assert model.fraud_trees is not None and model.fraud_trees.rows == 800
    assert model.cfg.fraud_tree_weight == weight
