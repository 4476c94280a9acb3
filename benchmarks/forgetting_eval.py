"""Evaluation slices and metrics of benchmarks/forgetting.py (imported by it; no Ray here).

    python benchmarks/forgetting.py --quick      # runs these; this module has no entry point

For every window ``j`` of a synthetic run the benchmark keeps a fixed evaluation slice:

* ``tail``: :func:`training.data.split.split_holdout`'s held-out tail (``holdout_frac``), the same
  rows that ``training.incremental`` holds out;
* ``history``: the purchases known when the tail starts (every earlier window in full, then
  the head of window ``j``), the same for every method and every update, so a change in the
  metric on window ``j`` comes from the model alone;
* ``pool``: the candidate items of the ranking, every item listed by windows ``0..j``. It
  stays fixed across updates: ``training.evaluation.evaluate.evaluate_rec`` ranks over
  every item the
  *model* knows, which grows with later windows (items launched after window ``j`` would be
  extra distractors that make old windows look forgotten for every method alike).

Metrics: rec NDCG@k / Recall@k (training.evaluation.evaluate's queries and model ranking,
training.evaluation.metrics' definitions), fraud AUC-PR
(training.evaluation.evaluate.evaluate_fraud), and fraud
AUC-PR under FGM/PGD perturbations of the fraud head's numeric inputs
(training.fit.objective.adversarial_delta, white box, per-row L2 radius in std units).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.data.schema import WindowData
from training.data.split import split_holdout
from training.evaluation.baselines import PopularityRecommender
from training.evaluation.evaluate import evaluate_fraud, model_rankings, rec_queries
from training.evaluation.metrics import fraud_metrics, ranking_metrics
from training.features.examples import FraudExamples, fraud_examples
from training.features.history import PurchaseHistory
from training.fit.objective import adversarial_delta
from training.model import FraudBatch, MultiTaskBatch, ShopStreamModel

logger = logging.getLogger(__name__)

CHUNK = 4096


@dataclass
class WindowSlice:
    """What window ``index`` is evaluated on, identical for every method and update."""

    index: int
    window_id: str
    head: WindowData
    tail: WindowData
    history: PurchaseHistory  # purchases before the tail starts
    pool: list[str]  # candidate item ids (every item of windows 0..index)
    titles: dict[str, str]
    popularity: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalSets:
    """Per-window slices of one synthetic run, plus each window in full (next-window tests)."""

    windows: list[WindowData]
    slices: list[WindowSlice]
    before: list[PurchaseHistory]  # before[j]: purchases of windows 0..j-1 in full


def build_eval_sets(windows: list[WindowData], holdout_frac: float, history_len: int,
                    k: int) -> EvalSets:
    before = [PurchaseHistory(history_len)]
    for window in windows[:-1]:
        before.append(before[-1].update(window.interactions))
    slices: list[WindowSlice] = []
    titles: dict[str, str] = {}
    for j, window in enumerate(windows):
        head, tail = split_holdout(window, holdout_frac)
        titles.update(zip(window.items["item_id"].astype(str), window.items["title"]))
        part = WindowSlice(j, window.window_id, head, tail,
                           before[j].update(head.interactions), list(titles), dict(titles))
        part.popularity = popularity_metrics(part, k)
        slices.append(part)
    return EvalSets(windows, slices, before)


def _targets(queries_targets: list[list[str]], pos: dict[str, int]) -> list[np.ndarray]:
    return [np.asarray([pos[i] for i in items], dtype=np.int64) for items in queries_targets]


def _rec_result(metrics: dict[str, float], k: int) -> dict[str, float]:
    return {f"ndcg@{k}": float(metrics[f"ndcg@{k}"]),
            f"recall@{k}": float(metrics[f"recall@{k}"]), "n_users": int(metrics["n_users"])}


def popularity_metrics(part: WindowSlice, k: int) -> dict[str, float]:
    """The most-bought items of the window's head, for everyone: a fixed reference line."""
    queries = rec_queries(part.history, part.tail)
    if not queries.user_ids:
        return {}
    pos = {item: i for i, item in enumerate(part.pool)}
    top = PopularityRecommender().fit(part.head.interactions).recommend(queries.user_ids[:1], k)
    row = [pos[i] for i in top[0] if i in pos][:k]
    ranked = np.full((len(queries.user_ids), k), -1, dtype=np.int64)
    ranked[:, :len(row)] = row
    return _rec_result(ranking_metrics(ranked, _targets(queries.targets, pos), k=k), k)


@torch.no_grad()
def pool_matrix(model: ShopStreamModel, known: torch.Tensor, part: WindowSlice) -> torch.Tensor:
    """Item vectors of ``part.pool``: learned rows for items the model knows, title vectors
    (the model's cold-start path) for the others. ``known`` = catalogue_matrix()[1:]."""
    index = {item: i for i, item in enumerate(model.items.ids)}
    cold = [i for i in part.pool if i not in index]
    cold_vec = model.item_vectors_from_titles([part.titles[i] for i in cold]) if cold else None
    cold_pos = {item: i for i, item in enumerate(cold)}
    rows = []
    for item in part.pool:
        if item in index:
            rows.append(known[index[item]])
        else:
            assert cold_vec is not None
            rows.append(cold_vec[cold_pos[item]].to(known.device))
    return torch.stack(rows)


def rec_metrics(model: ShopStreamModel, known: torch.Tensor, part: WindowSlice,
                k: int) -> dict[str, float]:
    queries = rec_queries(part.history, part.tail)
    if not queries.user_ids:
        return {f"ndcg@{k}": math.nan, f"recall@{k}": math.nan, "n_users": 0}
    matrix = pool_matrix(model, known, part)
    ranked = model_rankings(model, queries, part.history, part.pool, matrix, k)
    pos = {item: i for i, item in enumerate(part.pool)}
    return _rec_result(ranking_metrics(ranked, _targets(queries.targets, pos), k=k), k)


def evaluate_version(model: ShopStreamModel, sets: EvalSets, upto: int,
                     k: int) -> list[dict[str, float]]:
    """Metrics of one published version on the tails of windows ``0..upto``."""
    model.eval()
    with torch.no_grad():
        known = model.catalogue_matrix()[1:]
    out = []
    for part in sets.slices[:upto + 1]:
        fraud = evaluate_fraud(model, part.history, part.tail)
        out.append({**rec_metrics(model, known, part, k),
                    "auc_pr": float(fraud.get("auc_pr", math.nan)),
                    "n_txns": int(fraud.get("n", 0)), "n_frauds": int(fraud.get("n_pos", 0))})
    return out


# ---- robustness of the fraud head ---------------------------------------------------------


def _batch(examples: FraudExamples, rows: np.ndarray) -> FraudBatch:
    part = examples.take(rows)
    return FraudBatch(*(torch.from_numpy(a) for a in (
        part.features, part.amount, part.user_idx, part.hist_idx, part.item_idx, part.label)))


def _scores(model: ShopStreamModel, examples: FraudExamples, epsilon: float, steps: int,
            frauds_only: bool, pos_weight: float) -> np.ndarray:
    """Fraud probabilities with the numeric inputs moved by the attack (none at epsilon 0)."""
    out = []
    for start in range(0, len(examples), CHUNK):
        batch = _batch(examples, np.arange(start, min(start + CHUNK, len(examples))))
        with torch.no_grad():
            inputs = model.step_outputs(MultiTaskBatch(None, batch)).fraud
        assert inputs is not None
        numeric = inputs.numeric
        if epsilon > 0:
            delta = adversarial_delta(model, inputs, pos_weight, epsilon, steps)
            if frauds_only:
                # An evader controls only its own transactions: legit rows stay as they are.
                delta = delta * inputs.label[:, None].to(delta.dtype)
            numeric = numeric + delta
        with torch.no_grad():
            out.append(torch.sigmoid(model.fraud_head(inputs, numeric)).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def attack_names(epsilons: tuple[float, ...], pgd_steps: int) -> list[tuple[str, float, int,
                                                                          bool]]:
    """(name, epsilon, steps, frauds_only) of every attack, the clean score first."""
    attacks: list[tuple[str, float, int, bool]] = [("clean", 0.0, 1, False)]
    for eps in epsilons:
        attacks += [(f"fgm@{eps:g}", eps, 1, False), (f"fgm_fraud_only@{eps:g}", eps, 1, True)]
        if pgd_steps > 1:
            attacks.append((f"pgd{pgd_steps}@{eps:g}", eps, pgd_steps, False))
    return attacks


def robustness(model: ShopStreamModel, sets: EvalSets, version_window: int, shift: int,
               epsilons: tuple[float, ...], pgd_steps: int,
               pos_weight: float) -> dict[str, Any] | None:
    """Fraud AUC-PR of a version on the *next* window's transactions (none of which it saw),
    clean and under each attack; None after the last window. ``across_shift`` marks the
    step into the shift window, where the fraud campaign changes under the model's feet."""
    nxt = version_window + 1
    if nxt >= len(sets.windows):
        return None
    model.eval()
    examples = fraud_examples(model, sets.windows[nxt].transactions, sets.before[nxt])
    labels = examples.label.astype(bool)
    result: dict[str, Any] = {"window": sets.windows[nxt].window_id, "across_shift": nxt == shift,
                              "n_txns": len(labels), "n_frauds": int(labels.sum())}
    for name, eps, steps, frauds_only in attack_names(epsilons, pgd_steps):
        scores = _scores(model, examples, eps, steps, frauds_only, pos_weight)
        result[name] = float(fraud_metrics(labels, scores)["auc_pr"])
    return result
