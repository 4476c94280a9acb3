"""Each update's fraud trees and their weight in the served fraud score.

After the neural fit, an update fits gradient-boosted trees (``training.model.fraud_trees``)
on every labelled transaction the version knows — the replay buffer's reservoir of earlier
windows plus the rows it trained on — so the trees follow the data each window, in bounded
memory, and are published inside the version. Then it chooses the trees' weight in the
logit blend on the held-out tail, by average precision, from :data:`BLEND_GRID`:

* ties go to the larger tree weight (the simpler, better-understood model);
* with fewer than :data:`MIN_BLEND_FRAUDS` labelled frauds in the tail an AP difference is
  noise, so the weight is :data:`FALLBACK_TREE_WEIGHT`: trees alone, the strongest learner on
  small tabular data (Grinsztajn et al., NeurIPS 2022), until held-out data shows the neural
  head adds to them.

The trees being judged never see the rows that judge them (the tail and the gate's replay
sample). Once judged, the published version's trees are refitted on every labelled row, the
tail included, with the chosen weight (:func:`refit_trees`): after a fraud campaign shifts,
the newest labels are the ones that matter. The choice and each grid point's AP go into the
version's meta (``fraud_blend``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from training.evaluation.evaluate import fraud_scores
from training.evaluation.fraud_metrics import fraud_metrics
from training.features.examples import fraud_examples
from training.features.history import PurchaseHistory
from training.model import ShopStreamModel
from training.model.fraud_trees import AMOUNT_COLUMN, HISTORY_COLUMNS, FraudTrees, tree_inputs

BLEND_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_BLEND_FRAUDS = 20
FALLBACK_TREE_WEIGHT = 1.0


def known_transactions(*frames: pd.DataFrame, exclude: pd.DataFrame | None = None
                       ) -> pd.DataFrame:
    """The labelled rows of ``frames`` once each (a replayed row may also be in the mix),
    without the rows of ``exclude`` (matched by ``txn_id``): the rows that judge the trees."""
    parts = [f[f["is_fraud"].notna()] for f in frames if len(f)]
    if not parts:
        return frames[0].iloc[:0] if frames else pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    if "txn_id" not in rows:
        return rows
    rows = rows.drop_duplicates("txn_id", keep="last")
    if exclude is not None and len(exclude) and "txn_id" in exclude:
        rows = rows[~rows["txn_id"].isin(set(exclude["txn_id"]))]
    return rows


def refit_trees(model: ShopStreamModel, known: pd.DataFrame, history: PurchaseHistory,
                seed: int, weight: float | None = None) -> None:
    """Trees on every labelled row of ``known`` with ``weight``, by default the one already
    chosen (the fallback weight if the model had no trees). After an update is judged, the
    judging rows included (the freshest labels matter most after a shift)."""
    trees = fit_trees(model, known, history, seed) if len(known) else None
    if weight is None:
        weight = model.cfg.fraud_tree_weight if model.fraud_trees is not None \
            else FALLBACK_TREE_WEIGHT
    model.set_fraud_trees(trees, weight)


def fit_trees(model: ShopStreamModel, transactions: pd.DataFrame, history: PurchaseHistory,
              seed: int) -> FraudTrees | None:
    """Trees on the labelled ``transactions`` (None with one class only), with the user's
    purchase history among their inputs (``fraud_trees.HISTORY_COLUMNS``): read as of
    each row's window when ``history`` is :meth:`~PurchaseHistory.windowed`."""
    examples = fraud_examples(model, transactions, history)
    columns = (AMOUNT_COLUMN, *model.cfg.fraud_features, *HISTORY_COLUMNS)
    inputs = tree_inputs(examples.amount, examples.features, examples.bought)
    return FraudTrees.fit(inputs, examples.label.astype(bool), columns, seed)


def choose_fraud_blend(model: ShopStreamModel, trees: FraudTrees | None,
                       holdout: pd.DataFrame, history: PurchaseHistory) -> dict[str, Any]:
    """Set ``model``'s trees and the tree weight with the best held-out AP (see the module
    docstring); returns {"tree_weight", "basis", "auc_pr": {weight: AP}, "n_pos", "trees"}."""
    out: dict[str, Any] = {"tree_weight": 0.0, "auc_pr": {}, "n_pos": 0,
                           "trees": None if trees is None else {"rows": trees.rows,
                                                                "frauds": trees.frauds}}
    if trees is None:
        model.set_fraud_trees(None, 0.0)
        return {**out, "basis": "no trees: the labels so far hold one class"}
    examples = fraud_examples(model, holdout, history)
    labels = examples.label.astype(bool)
    out["n_pos"] = int(labels.sum())
    if out["n_pos"] < MIN_BLEND_FRAUDS or labels.all():
        model.set_fraud_trees(trees, FALLBACK_TREE_WEIGHT)
        return {**out, "tree_weight": FALLBACK_TREE_WEIGHT,
                "basis": f"fallback: {out['n_pos']} held-out frauds < {MIN_BLEND_FRAUDS}"}
    best, best_ap = FALLBACK_TREE_WEIGHT, -math.inf
    for weight in BLEND_GRID:
        model.set_fraud_trees(trees, weight)
        ap = float(fraud_metrics(labels, fraud_scores(model, examples))["auc_pr"])
        out["auc_pr"][str(weight)] = ap
        if ap >= best_ap:  # ascending grid: ties go to the larger tree weight
            best, best_ap = weight, ap
    model.set_fraud_trees(trees, best)
    return {**out, "tree_weight": best,
            "basis": f"best held-out AP of {len(BLEND_GRID)} weights, {out['n_pos']} frauds"}


def fraud_blend(model: ShopStreamModel, known: pd.DataFrame, holdout: pd.DataFrame,
                history: PurchaseHistory, seed: int) -> dict[str, Any]:
    """Fit the trees on ``known`` and choose their weight on ``holdout`` (both transaction
    tables; unlabelled rows are ignored)."""
    if not len(known):
        model.set_fraud_trees(None, 0.0)
        return {"tree_weight": 0.0, "basis": "no labelled transactions", "auc_pr": {},
                "n_pos": 0, "trees": None}
    return choose_fraud_blend(model, fit_trees(model, known, history, seed), holdout, history)
