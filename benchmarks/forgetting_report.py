"""Forgetting numbers, tables (text + Markdown) and the plot of benchmarks/forgetting.py.

    python benchmarks/forgetting.py --quick      # this module has no entry point

Input is the benchmark's result dict: ``runs`` (one per method and seed) whose ``updates[t]
["eval"][j]`` holds the metrics of version ``t`` on the tail of window ``j``. Matrices below
are ``M[t, j]`` (NaN where ``j > t``).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np

from cluster.comparison.tables import markdown_table

logger = logging.getLogger(__name__)

SUMMARY_KEYS: tuple[str, ...] = ("final_avg", "forgetting_final", "forgetting_pre_shift",
                                 "forgetting_all", "max_forgetting", "plasticity")
# (Markdown header, console header) of the main table's columns.
COLUMNS: dict[str, tuple[str, str]] = {
    "final_avg": ("final avg", "avg"), "forgetting_final": ("forgetting (final)", "fgt"),
    "forgetting_pre_shift": ("forgetting (final, pre-shift windows)", "fgt-pre"),
    "forgetting_all": ("forgetting (every update)", "fgt-all"),
    "plasticity": ("newest window", "new")}


def metric_names(result: dict[str, Any]) -> list[str]:
    k = int(result["config"]["train"]["eval_k"])
    return [f"ndcg@{k}", f"recall@{k}", "auc_pr"]


def matrix(run: dict[str, Any], metric: str) -> np.ndarray:
    n = len(run["updates"])
    out = np.full((n, n), np.nan)
    for t, update in enumerate(run["updates"]):
        for j, scores in enumerate(update["eval"]):
            value = scores.get(metric)
            out[t, j] = np.nan if value is None else float(value)
    return out


def _nanmean(values: list[float] | np.ndarray) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def forgetting(m: np.ndarray) -> np.ndarray:
    """F[t, j] = max over updates j..t-1 of M[., j] minus M[t, j], for j < t (else NaN)."""
    n = m.shape[0]
    out = np.full((n, n), np.nan)
    for t in range(1, n):
        for j in range(t):
            earlier = m[j:t, j]
            if not np.isnan(earlier).all() and not np.isnan(m[t, j]):
                out[t, j] = float(np.nanmax(earlier)) - m[t, j]
    return out


def summarize(m: np.ndarray, shift: int) -> dict[str, float]:
    """Final average metric, mean forgetting (after the last update: over every earlier
    window / the windows before the shift; after every update), the largest final forgetting,
    and plasticity (the metric on the window just trained)."""
    f = forgetting(m)
    last = m.shape[0] - 1
    final = f[last, :last] if last > 0 else np.zeros(0)
    return {"final_avg": _nanmean(m[last]), "forgetting_final": _nanmean(final),
            "forgetting_pre_shift": _nanmean(final[:shift]),
            "forgetting_all": _nanmean(f[~np.isnan(f)]),
            "max_forgetting": float(np.nanmax(final)) if final.size and
            not np.isnan(final).all() else math.nan,
            "plasticity": _nanmean(np.diag(m))}


def shift_of(result: dict[str, Any]) -> int:
    return int(result["seeds"][0]["shift_window"])


def methods_of(result: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in result["runs"]))


def aggregate(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {metric: {key: mean over seeds, key_std: std over seeds}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods_of(result):
        runs = [r for r in result["runs"] if r["method"] == method]
        out[method] = {}
        for metric in metric_names(result):
            per_seed = [summarize(matrix(r, metric), shift_of(result)) for r in runs]
            cell: dict[str, float] = {}
            for key in SUMMARY_KEYS:
                values = np.asarray([s[key] for s in per_seed], dtype=float)
                cell[key] = _nanmean(values)
                cell[key + "_std"] = float(np.nanstd(values)) if len(values) > 1 else math.nan
            out[method][metric] = cell
    return out


INFO_KEYS: tuple[str, ...] = ("window", "across_shift", "n_txns", "n_frauds")
REGIMES: dict[bool, str] = {False: "same campaign", True: "across the shift"}


def robustness_summary(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{regime: {method: {attack: mean AUC-PR over the next-window evaluations and seeds}}};
    regime "same campaign" (the next window's fraud is the kind the version was trained on)
    or "across the shift" (it is not)."""
    found: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in result["runs"]:
        for update in run["updates"]:
            row = update.get("robustness")
            if not row:
                continue
            regime = found.setdefault(REGIMES[bool(row["across_shift"])], {})
            cell = regime.setdefault(run["method"], {})
            for key, value in row.items():
                if key not in INFO_KEYS:
                    cell.setdefault(key, []).append(math.nan if value is None else value)
    return {regime: {m: {k: _nanmean(v) for k, v in cell.items()} for m, cell in by.items()}
            for regime, by in found.items()}


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.4f}"
    if std is not None and not math.isnan(std):
        text += f"±{std:.4f}"
    return text


def main_table(result: dict[str, Any], metrics: list[str] | None = None, short: bool = False
               ) -> tuple[list[str], list[list[str]]]:
    agg = aggregate(result)
    metrics = metrics or [metric_names(result)[0], "auc_pr"]
    header = ["method"] + [f"{metric} {labels[int(short)]}" for metric in metrics
                           for labels in COLUMNS.values()]
    rows = []
    for method, cells in agg.items():
        rows.append([method] + [_fmt(cells[metric][key], cells[metric][key + "_std"])
                                for metric in metrics for key in COLUMNS])
    return header, rows


def noise_floor(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Spread of the update-0 metrics over the runs whose update 0 has identical settings
    (no replay buffer and no teacher yet, no FGM): the run-to-run noise of one update."""
    out: dict[str, dict[str, float]] = {}
    for metric in metric_names(result):
        for seed in result["seeds"]:
            values = [matrix(r, metric)[0, 0] for r in result["runs"]
                      if r["seed"] == seed["seed"] and not r["settings"]["adv_epsilon"]]
            if len(values) > 1:
                cell = out.setdefault(metric, {"range": 0.0, "std": 0.0, "n": 0})
                cell["range"] = max(cell["range"], float(np.ptp(values)))
                cell["std"] = max(cell["std"], float(np.std(values, ddof=1)))
                cell["n"] = len(values)
    return out


def comparisons(result: dict[str, Any]) -> list[str]:
    """Plain sentences: each method's forgetting against "none", next to the noise floor."""
    agg, noise = aggregate(result), noise_floor(result)
    if "none" not in agg:
        return []
    lines = []
    for metric in (metric_names(result)[0], "auc_pr"):
        base = agg["none"][metric]
        spread = noise.get(metric)
        floor = (f"; update-0 spread of identical settings: range {spread['range']:.4f}, "
                 f"std {spread['std']:.4f} over {spread['n']} runs" if spread else "")
        for method, cells in agg.items():
            if method == "none":
                continue
            c = cells[metric]
            lines.append(
                f"{metric}, {method} vs none: final forgetting {c['forgetting_final']:.4f} vs "
                f"{base['forgetting_final']:.4f} (pre-shift windows {c['forgetting_pre_shift']:.4f}"
                f" vs {base['forgetting_pre_shift']:.4f}), final avg {c['final_avg']:.4f} vs "
                f"{base['final_avg']:.4f}, newest window {c['plasticity']:.4f} vs "
                f"{base['plasticity']:.4f}{floor}")
    return lines


def robustness_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    summary = robustness_summary(result)
    if not summary:
        return [], []
    attacks = list(next(iter(next(iter(summary.values())).values())))
    rows = [[m, regime, *(_fmt(c.get(a)) for a in attacks)]
            for regime in REGIMES.values() for m, c in summary.get(regime, {}).items()]
    return ["method", "next window", *attacks], rows


def _matrix_md(run: dict[str, Any], metric: str) -> str:
    m = matrix(run, metric)
    ids = [u["window"] for u in run["updates"]]
    rows = [[f"after update {t} ({ids[t]})", *(_fmt(v) for v in m[t])] for t in range(len(ids))]
    return markdown_table([f"{run['method']}, {metric}, seed {run['seed']}",
                           *(f"w{j}" for j in range(len(ids)))], rows)


def _robust_md(run: dict[str, Any]) -> str:
    rows = [u["robustness"] for u in run["updates"] if u.get("robustness")]
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "window"]
    return markdown_table([f"{run['method']} (seed {run['seed']}) on next window", *keys],
                          [[r["window"], *(str(r[k]) if k in INFO_KEYS else _fmt(r[k])
                                           for k in keys)] for r in rows])


def markdown(result: dict[str, Any], name: str) -> str:
    cfg = result["config"]
    header, rows = main_table(result)
    seeds = result["seeds"]
    parts = [
        "# Forgetting on the synthetic drifting shop",
        "",
        f"`python benchmarks/forgetting.py{' --quick' if result['mode'] == 'quick' else ''}`"
        f" ({result['mode']} mode, {result['seconds']:.0f} s, seeds "
        f"{[s['seed'] for s in seeds]}, {cfg['shop']['n_windows']} windows, shift at window "
        f"{seeds[0]['shift_window']}, feed={cfg['bench']['feed']}). Raw numbers: `{name}.json`;"
        f" plot: `{name}.png`.",
        "",
        "Each row is one sequence of published versions (fresh store, windows in order). "
        "*final avg*: metric of the last version averaged over every window's held-out tail; "
        "*forgetting (final)*: mean over earlier windows of (best metric on that window by an "
        "earlier version − metric of the last version); *pre-shift windows*: the same over "
        "the windows before the shift only; *every update*: mean over all (update, earlier "
        "window) pairs; *newest window*: metric on the tail of the window just trained "
        "(plasticity). Forgetting < 0 means later updates improved the old window. "
        + ("Values are mean±std over seeds." if len(seeds) > 1 else
           "One seed: no error bars; see the noise floor below."),
        "",
        markdown_table(header, rows),
        "",
        markdown_table(*main_table(result, [metric_names(result)[1]])),
        "",
        "Noise floor: update 0 has identical settings in every run except the fgm one (no "
        "replay buffer, no teacher yet), yet Ray Train workers draw dropout masks from an "
        "unseeded torch RNG, so their spread is the run-to-run noise of a single update:",
        "",
        *[f"* {metric}: range {c['range']:.4f}, std {c['std']:.4f} over {c['n']} runs"
          for metric, c in noise_floor(result).items()],
        "",
        *[f"* {line}" for line in comparisons(result)],
        "",
    ]
    parts += _fgm_section(result) + _window_sections(result)
    parts += ["## Settings", "", "```json", json.dumps(cfg, indent=1), "```", ""]
    return "\n".join(parts)


def _fgm_section(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    r_header, r_rows = robustness_table(result)
    parts: list[str] = []
    if r_rows:
        parts += ["## FGM adversarial training of the fraud head", "",
                  f"Fraud AUC-PR of every version on the *next* window's transactions, clean and "
                  f"with the fraud head's numeric inputs perturbed (white box, L2 radius ε per "
                  f"row in std units): `fgm@ε` moves every row towards higher loss "
                  f"(training.fit.objective.adversarial_delta), `fgm_fraud_only@ε` only the frauds "
                  f"(an evader controls only its own transactions), `pgdN@ε` N PGD steps. "
                  f"Means over the next-window evaluations, separately for steps into a window "
                  f"of the same fraud campaign and for the step across the shift (a new "
                  f"campaign: every model is near or below chance there). The fgm run trains "
                  f"with adv_epsilon="
                  f"{cfg['bench']['adv_epsilon']}.", "", markdown_table(r_header, r_rows), ""]
    return parts


def _window_sections(result: dict[str, Any]) -> list[str]:
    seeds = result["seeds"]
    parts = ["## Windows", "", markdown_table(
        ["seed", "window", "interactions", "transactions", "tail interactions",
         "tail transactions", "tail frauds", "pool items", "popularity ndcg (tail)"],
        [[str(s["seed"]), w["window"], str(w["interactions"]), str(w["transactions"]),
          str(w["tail_interactions"]), str(w["tail_transactions"]), str(w["tail_frauds"]),
          str(w["pool_items"]), _fmt(next((v for k, v in w["popularity"].items()
                                           if k.startswith("ndcg")), None))]
         for s in seeds for w in s["windows"]]), "", "## Per-window metrics", "",
        "Rows: the version after update t; columns: the held-out tail of window j.", ""]
    for run in result["runs"]:
        for metric in (metric_names(result)[0], "auc_pr"):
            parts += [_matrix_md(run, metric), ""]
        robust = _robust_md(run)
        if robust:
            parts += [robust, ""]
    return parts


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
