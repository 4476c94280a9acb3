"""Pooled fraud metrics a risk team reads, with bootstrap intervals, for the pipeline report.

    python -m cluster.pipeline --help    # no entry point; cluster.runner calls it

Per-window AUC-PR on a handful of frauds says little, so when a window is evaluated,
:func:`record_fraud_intervals` saves every fraud method's scores of that window's labelled
transactions (the same rows, in the same order, for every method) to the store as
``configs/pipeline-per-txn/<window>.json`` (and sets that window's own intervals), and when
the run ends :func:`pool_fraud_intervals` computes, over all evaluated windows (scores
concatenated):

* per method, ``result["fraud_intervals"]["methods"][m][metric]`` = {value, lo, hi}:
  AUC-PR (average precision), ROC-AUC, recall at 1% FPR, and precision at the alert
  budget (each window's top :data:`BUDGET_FRAC` of transactions flagged, at least one, as a
  team with a fixed daily review capacity would); where transactions name their user (the
  card), also the Fraud Detection Handbook's card precision at the same budget
  (:func:`card_precision`);
* per pair (ours vs every other fraud method), the paired difference of each metric, the
  same resampled rows for both methods, so an interval excluding 0 says they differ.

Intervals: percentile bootstrap, :data:`N_BOOT` resamples of transactions drawn within
each window (so each window keeps its size and its alert budget), seed :data:`SEED`; a
window's own intervals draw with the seed (:data:`SEED`, its position among the evaluated
windows), so they do not depend on the windows before it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cluster.comparison.report_data import NOT_MEASURED, interval_verdict, number
from cluster.comparison.tables import fmt
from cluster.investigations import investigated_lines
from training.evaluation.fraud_metrics import fraud_metrics
from training.evaluation.reliability import (
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from training.incremental_config import REVIEW_FPR
from training.store import CheckpointStore

N_BOOT = 200
ALPHA = 0.05
SEED = 0
BUDGET_FRAC = 0.01
OURS = "incremental"
PER_TXN_CONFIG = "pipeline-per-txn"
METRICS: tuple[str, ...] = ("auc_pr", "roc_auc", "recall@1%fpr", "precision@budget")
CARD_METRIC = "card_precision@budget"

Part = tuple[np.ndarray, np.ndarray]  # (labels, scores) of one window
WindowCards = tuple[np.ndarray, int]  # a window's card code per transaction, and its card budget
Cards = list[WindowCards] | None


def budget_precision(parts: list[Part]) -> float:
    """Frauds among each window's top ``ceil(BUDGET_FRAC * n)`` scores over all alerts
    raised; NaN with no transaction. Ties at the cut are broken by row order (stable)."""
    hits = alerts = 0
    for labels, scores in parts:
        if not len(labels):
            continue
        k = max(1, math.ceil(BUDGET_FRAC * len(labels)))
        top = np.argsort(-scores, kind="stable")[:k]
        hits += int(labels[top].sum())
        alerts += k
    return hits / alerts if alerts else math.nan


def card_precision(parts: list[Part], cards: list[WindowCards]) -> float:
    """The Handbook's card precision@k: in each window a card (user) scores its
    highest-scored transaction, its ``k`` best-scored cards are flagged, and precision is
    the flagged cards with a fraud in the window over all flagged (a team reviews a card,
    not a payment); ``cards`` per window: (each transaction's card code, k). NaN with no
    transaction."""
    hits = alerts = 0
    for (labels, scores), (codes, k) in zip(parts, cards):
        if not len(labels):
            continue
        n = int(codes.max()) + 1
        best = np.full(n, -np.inf)
        np.maximum.at(best, codes, scores)
        fraud = np.zeros(n, dtype=bool)
        np.logical_or.at(fraud, codes, labels)
        present = np.flatnonzero(np.bincount(codes, minlength=n))
        top = present[np.argsort(-best[present], kind="stable")[:k]]
        hits += int(fraud[top].sum())
        alerts += len(top)
    return hits / alerts if alerts else math.nan


def card_budget(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """(codes, k): a window's alert budget in cards, :data:`BUDGET_FRAC` of its cards (at
    least one). Fixed from the window itself, as the Handbook's k cards a day, so a
    bootstrap resample, which draws fewer distinct cards, is judged at the same budget."""
    return codes, max(1, math.ceil(BUDGET_FRAC * len(np.unique(codes))))


def metric_names(cards: Cards) -> tuple[str, ...]:
    return METRICS if cards is None else (*METRICS, CARD_METRIC)


def pooled_metrics(parts: list[Part], cards: Cards = None) -> dict[str, float]:
    """:func:`metric_names` over the windows' rows concatenated (the budgets per window)."""
    labels = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=bool)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if not len(labels):
        return dict.fromkeys(metric_names(cards), math.nan)
    row = fraud_metrics(labels, scores)
    out = {"auc_pr": row["auc_pr"], "roc_auc": row["roc_auc"],
           "recall@1%fpr": row["recall@1%fpr"], "precision@budget": budget_precision(parts)}
    if cards is not None:
        out[CARD_METRIC] = card_precision(parts, cards)
    return out


def _resamples(sizes: list[int], seed: int | tuple[int, ...] = SEED
               ) -> list[list[np.ndarray]]:
    """:data:`N_BOOT` index draws, one array per window (within-window resampling)."""
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, n, n) if n else np.zeros(0, dtype=np.int64) for n in sizes]
            for _ in range(N_BOOT)]


def _bounds(values: list[float]) -> tuple[float, float]:
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if not finite.size:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [ALPHA / 2.0, 1.0 - ALPHA / 2.0])
    return float(lo), float(hi)


def boot_rows(labels: list[np.ndarray], scores: list[np.ndarray],
              draws: list[list[np.ndarray]], cards: Cards = None) -> list[dict[str, float]]:
    """One method's pooled metrics on each resample of ``draws`` (computed once per method:
    its own interval and every paired difference that involves it read the same rows)."""
    return [pooled_metrics([(y[i], s[i]) for y, s, i in zip(labels, scores, d)],
                           _take(cards, d)) for d in draws]


def _take(cards: Cards, draw: list[np.ndarray]) -> Cards:
    return None if cards is None else [(c[i], k) for (c, k), i in zip(cards, draw)]


def _method_cells(value: dict[str, float], rows: list[dict[str, float]]
                  ) -> dict[str, dict[str, float]]:
    """{metric: {"value", "lo", "hi"}} from a method's value and its :func:`boot_rows`."""
    bounds = {m: _bounds([r[m] for r in rows]) for m in value}
    return {m: {"value": value[m], "lo": bounds[m][0], "hi": bounds[m][1]} for m in value}


def _paired_cells(a: dict[str, float], b: dict[str, float], rows_a: list[dict[str, float]],
                  rows_b: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"diff", "lo", "hi"}} of ``a - b``, resample by resample."""
    bounds = {m: _bounds([ra[m] - rb[m] for ra, rb in zip(rows_a, rows_b)]) for m in a}
    return {m: {"diff": a[m] - b[m], "lo": bounds[m][0], "hi": bounds[m][1]} for m in a}


def intervals(labels: list[np.ndarray], by_method: Mapping[str, list[np.ndarray]],
              draws: list[list[np.ndarray]], cards: Cards) -> dict[str, Any]:
    """{"methods": {m: {metric: {value, lo, hi}}}, "paired": {"ours vs m": {metric: {diff,
    lo, hi}}}} on ``draws``: each method's value and resamples are scored once, and a pair's
    difference is taken on the same resampled rows."""
    values = {m: pooled_metrics(list(zip(labels, s)), cards) for m, s in by_method.items()}
    rows = {m: boot_rows(labels, s, draws, cards) for m, s in by_method.items()}
    others = [m for m in by_method if m != OURS] if OURS in by_method else []
    return {"methods": {m: _method_cells(values[m], rows[m]) for m in by_method},
            "paired": {f"{OURS} vs {m}": _paired_cells(values[OURS], values[m], rows[OURS],
                                                       rows[m]) for m in others}}


def transaction_cards(transactions: pd.DataFrame) -> np.ndarray | None:
    """The user (card) of each labelled transaction, in table order (the rows every fraud
    method scores); a transaction without one is its own card. None when no transaction
    names a user (the ULB data are anonymised)."""
    rows = transactions[transactions["is_fraud"].notna()] if "is_fraud" in transactions \
        else transactions.iloc[:0]
    if "user_id" not in rows or not rows["user_id"].notna().any():
        return None
    users = np.array(rows["user_id"].to_numpy(dtype=object), dtype=object)  # a copy
    missing = pd.isna(users)
    users[missing] = [f"transaction {i}" for i in np.flatnonzero(missing)]
    return users.astype(str)


def _config_name(window: str) -> str:
    return f"{PER_TXN_CONFIG}/{re.sub(r'[^A-Za-z0-9._-]', '_', window)}"


def record_fraud_intervals(result: dict[str, Any], store: CheckpointStore, window: str,
                           scored: Mapping[str, tuple[np.ndarray, np.ndarray]],
                           cards: np.ndarray | None = None) -> None:
    """Save window ``window``'s per-transaction scores ({method: (labels, scores)}, and the
    card of each transaction when the data name one) and set its own intervals
    (``result["fraud_intervals"]["per_window"][window]``, resampled with its own seed).

    The pooled intervals are :func:`pool_fraud_intervals`'s, once when the run ends: pooled
    at every window, a run's cost grew with the square of its windows (on the two ULB days,
    48 hours, about 5 minutes per window by the last)."""
    if not scored:
        return
    labels = next(iter(scored.values()))[0]
    record: dict[str, Any] = {
        "labels": labels.astype(int).tolist(),
        "methods": {m: s.astype(float).tolist() for m, (_, s) in scored.items()}}
    if cards is not None and len(cards) == len(labels):
        record["cards"] = [str(c) for c in cards]
    store.put_config(_config_name(window), record)
    y, by_method, codes = _parts([record])
    position = list(result["evaluated_windows"]).index(window)
    tree = result.setdefault("fraud_intervals", {})
    per_window = dict(tree.get("per_window") or {})
    per_window[window] = {"n": int(len(y[0])), "n_pos": int(y[0].sum()), **intervals(
        y, by_method, _resamples([len(y[0])], seed=(SEED, position)), codes)}
    tree["per_window"] = per_window


def pool_fraud_intervals(result: dict[str, Any], store: CheckpointStore) -> None:
    """``result["fraud_intervals"]``'s pooled part over every evaluated window whose scores
    were saved (module doc), and each method's calibration; nothing without any."""
    found = [store.get_config(_config_name(w)) for w in result["evaluated_windows"]]
    saved: list[dict[str, Any]] = [s for s in found if s]
    if not saved:
        return
    ys, by_method, codes = _parts(saved, list(result.get("methods") or {}))
    pooled = intervals(ys, by_method, _resamples([len(y) for y in ys]), codes)
    per_window = (result.get("fraud_intervals") or {}).get("per_window") or {}
    result["fraud_intervals"] = {
        "level": 1.0 - ALPHA, "n_boot": N_BOOT, "seed": SEED, "budget_frac": BUDGET_FRAC,
        "windows": len(saved), "n": int(sum(len(y) for y in ys)),
        "n_pos": int(sum(int(y.sum()) for y in ys)),
        "methods": pooled["methods"], "paired": pooled["paired"], "per_window": per_window,
        "calibration": {m: calibration_summary(ys, s) for m, s in by_method.items()}}


def _parts(saved: list[dict[str, Any]], order: list[str] | None = None
           ) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], Cards]:
    """(labels per window, {method: scores per window}, card budgets per window) of saved
    per-transaction records: the methods every record has, in ``order`` (the run's methods;
    the store keeps a record's keys sorted) and then the record's; card precision only when
    every window names its cards (a resumed run may not)."""
    ys = [np.asarray(s["labels"]).astype(bool) for s in saved]
    codes = [card_budget(pd.factorize(np.asarray(s["cards"], dtype=object))[0])
             for s in saved] if all("cards" in s for s in saved) else None
    named = [*(order or []), *saved[-1]["methods"]]
    methods = [m for m in dict.fromkeys(named) if all(m in s["methods"] for s in saved)]
    by_method = {m: [np.asarray(s["methods"][m], dtype=np.float64) for s in saved]
                 for m in methods}
    return ys, by_method, codes


def calibration_summary(labels: list[np.ndarray], scores: list[np.ndarray]
                        ) -> dict[str, Any]:
    """Pooled Brier score, ECE and the reliability bins of one method's probabilities."""
    y, p = np.concatenate(labels), np.concatenate(scores)
    return {"brier": brier_score(y, p), "ece": expected_calibration_error(y, p),
            "bins": reliability_bins(y, p)}


def fraud_table(result: Mapping[str, Any]) -> list[str]:
    """Markdown lines: the pooled table and ours' paired differences (empty without)."""
    tree = result.get("fraud_intervals")
    if not tree or not tree.get("methods"):
        return []
    level = int(round(100 * tree["level"]))
    names = list(next(iter(tree["methods"].values())))
    card = (f" (cards: each window's top {100 * tree['budget_frac']:g}% of its users by their "
            "highest-scored transaction)") if CARD_METRIC in names else ""
    lines = [f"Fraud, pooled over {tree['windows']} evaluated window(s): {tree['n']} labelled "
             f"transactions, {tree['n_pos']} frauds; {level}% bootstrap intervals "
             f"({tree['n_boot']} resamples within windows); alert budget = top "
             f"{100 * tree['budget_frac']:g}% of each window{card}.", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method, row in tree["methods"].items():
        cells = [interval_cell(row[m]) for m in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for pair, row in tree["paired"].items():
        cells = [f"{m} {interval_cell(row[m], 'diff')}" for m in names]
        lines.append("")
        lines.append(f"{pair} (paired): " + "; ".join(cells))
    return lines + [""] + calibration_lines(result) + investigated_lines(result)


def per_window_fraud_table(result: Mapping[str, Any], baseline: str = "hist_gradient_boosting"
                           ) -> list[str]:
    """Markdown: ours and ``baseline`` on each evaluated window, every metric with its
    within-window bootstrap interval, and ours - baseline AUC-PR (paired) with its verdict
    (empty before any window has intervals)."""
    windows = (result.get("fraud_intervals") or {}).get("per_window") or {}
    rows, verdicts = [], []
    for window, tree in windows.items():
        pair = tree["paired"].get(f"{OURS} vs {baseline}")
        for method in (OURS, baseline):
            row = tree["methods"].get(method)
            if row is None:
                continue
            names = list(row)
            cells = [interval_cell(row[m]) for m in names]
            versus = ""
            if method == OURS and pair:
                verdict = cell_verdict(pair["auc_pr"])
                verdicts.append(verdict)
                cell = interval_cell(pair["auc_pr"], "diff")
                versus = cell if verdict == NOT_MEASURED else f"{cell} {verdict}"
            rows.append(f"| {window} | {method} | {tree['n']} ({tree['n_pos']}) | "
                        + " | ".join(cells) + f" | {versus} |")
    if not rows:
        return []
    head = ["| window | method | transactions (frauds) | " + " | ".join(names)
            + f" | auc_pr vs {baseline} (paired) |", "|---" * (len(names) + 4) + "|"]
    # A window without a fraud (or without a legitimate transaction) has no AUC-PR: counted
    # apart, never as "not distinguishable".
    kinds = ("better", "worse", "not distinguishable", NOT_MEASURED)
    count = ", ".join(f"{verdicts.count(v)} {v}" for v in kinds
                      if v != NOT_MEASURED or v in verdicts)
    return [f"Each window on its own: {N_BOOT} resamples of its transactions; "
            f"`{OURS}` vs `{baseline}` by AUC-PR per window: {count}.", "", *head, *rows, ""]


def interval_cell(cell: Mapping[str, Any], key: str = "value") -> str:
    """``value [lo, hi]`` of one interval cell (``key="diff"``: a signed difference), three
    decimals; an undefined value or bound (a window without a fraud has no AUC-PR, and the
    saved results hold it as null) reads "not measured" instead of failing the report."""
    sign = key == "diff"
    value, lo, hi = (number(cell.get(k)) for k in (key, "lo", "hi"))
    if not math.isfinite(value):
        return NOT_MEASURED
    return f"{fmt(value, 3, sign)} [{fmt(lo, 3, sign)}, {fmt(hi, 3, sign)}]"


def cell_verdict(cell: Mapping[str, Any]) -> str:
    """:func:`interval_verdict` of a paired cell; "not measured" when its bounds are not."""
    lo, hi = number(cell.get("lo")), number(cell.get("hi"))
    return interval_verdict(lo, hi) if math.isfinite(lo) and math.isfinite(hi) \
        else NOT_MEASURED


def calibration_lines(result: Mapping[str, Any]) -> list[str]:
    """Markdown: each method's pooled Brier and ECE, and how far ours' realised review FPR
    on each next window landed from the target its thresholds were set for."""
    calibration = (result.get("fraud_intervals") or {}).get("calibration") or {}
    if not calibration:
        return []
    lines = ["Calibration of the fraud probabilities, pooled (reliability diagram: "
             "`fraud_reliability.png`; ECE over 10 equal-width bins):", "",
             "| method | Brier | ECE |", "|---|---|---|"]
    lines += [f"| {m} | {row['brier']:.4f} | {row['ece']:.4f} |"
              for m, row in calibration.items()]
    realised = [r for r in (result.get("realised_fpr") or {}).values()
                if r.get("fpr") is not None]
    if realised:
        lines += ["", realised_line(realised)]
    return lines + [""]


def realised_review(thresholds: Mapping[str, Any], labels: np.ndarray, scores: np.ndarray
                    ) -> dict[str, Any] | None:
    """How a version's review threshold does on a window it did not see: realised FPR, alert
    rate and alerts, beside the target it was set for (None: nothing to check)."""
    if thresholds.get("review") is None or not len(labels) or labels.all():
        return None
    # Versions from before the alert budget set the review threshold at REVIEW_FPR; the
    # default thresholds (no held-out scores yet, e.g. the first windows under a label
    # delay) were set for no target, so there is nothing to check them against.
    target = thresholds.get("target") or (
        None if str(thresholds.get("basis", "")).startswith("default") else {"fpr": REVIEW_FPR})
    if target is None:
        return None
    flagged = scores >= float(thresholds["review"])
    return {"target": target.get("fpr"), "target_alert_rate": target.get("alert_rate"),
            "review_threshold": float(thresholds["review"]),
            "fpr": float(flagged[~labels].mean()), "alert_rate": float(flagged.mean()),
            "alerts": int(flagged.sum()), "n": int(len(labels))}


def realised_line(realised: list[Mapping[str, Any]]) -> str:
    """Ours' realised review FPR, or alert rate under an alert budget, against its target."""
    budget = realised[0].get("target_alert_rate")
    key, what = ("alert_rate", "alert rate") if budget else ("fpr", "FPR")
    target = float(budget if budget else realised[0]["target"])
    values = [float(r[key]) for r in realised]
    return (f"Realised review {what} of `{OURS}` on each next window (thresholds set on the "
            f"held-out tail for {what} {target:g}): mean {np.mean(values):.4f} "
            f"({np.mean(values) / target:.2f}x the target), range "
            f"{min(values):.4f}..{max(values):.4f} over {len(values)} windows; alerts raised "
            f"{sum(int(r['alerts']) for r in realised)} of "
            f"{sum(int(r['n']) for r in realised)} transactions.")
