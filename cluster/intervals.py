"""Bootstrap intervals of the pipeline's rec metrics, computed when a window is evaluated.

    python -m cluster.pipeline --help    # no entry point; cluster.runner calls it

Every method is scored on the same users of a window (``cluster.evaluation``), so per-user
values pair up. When window ``w`` is evaluated, :func:`record_rec_intervals`:

* adds ``ci95`` to each method's rec row: the percentile-bootstrap 95% interval of mean warm
  NDCG@k and of mean NDCG@k over that window's users;
* sets ``result["intervals"]["paired"][pair]["windows"][w]``: the paired-bootstrap interval
  of the difference of per-user warm NDCG@k, for ours vs every other neural method and every
  neural method vs every rec baseline;
* recomputes the pooled intervals (per-user values of every evaluated window so far,
  concatenated): per method in ``result["intervals"]["methods"]``, per pair under
  ``"pooled"``.

The per-user values never enter the results: they are saved to the store as
``configs/pipeline-per-user/<window>.json``, so a resumed run still pools every window.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from cluster.evaluation import RecRow
from training.bootstrap import bootstrap_ci, paired_bootstrap_diff
from training.store import CheckpointStore

logger = logging.getLogger(__name__)

N_BOOT = 1000
ALPHA = 0.05
SEED = 0
OURS = "incremental"
PER_USER_CONFIG = "pipeline-per-user"


def rec_pairs(methods: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(a, b) pairs compared on warm NDCG: ours vs every other neural method, then every
    neural method vs every rec baseline (in the methods' order)."""
    rec = [m for m, d in methods.items() if "rec" in d.get("tasks", [])]
    neural = [m for m in rec if methods[m].get("kind") == "neural"]
    base = [m for m in rec if methods[m].get("kind") != "neural"]
    pairs = [(OURS, m) for m in neural if m != OURS] if OURS in neural else []
    return pairs + [(a, b) for a in neural for b in base]


def pair_key(a: str, b: str) -> str:
    return f"{a} vs {b}"


def interval(values: np.ndarray) -> dict[str, float]:
    """{"mean", "lo", "hi", "n"} of ``values`` (NaN mean and bounds when empty)."""
    lo, hi = bootstrap_ci(values, N_BOOT, SEED, ALPHA)
    mean = float(np.mean(values)) if values.size else float("nan")
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(values.size)}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """{"mean_a", "mean_b", "diff", "lo", "hi", "n"}: paired bootstrap of ``a - b``."""
    diff, lo, hi = paired_bootstrap_diff(a, b, N_BOOT, SEED, ALPHA)
    empty = a.size == 0
    return {"mean_a": float("nan") if empty else float(np.mean(a)),
            "mean_b": float("nan") if empty else float(np.mean(b)),
            "diff": diff, "lo": lo, "hi": hi, "n": int(a.size)}


def take_per_user(out: dict[str, dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """Per-user warm and all NDCG@k of every method of ``out`` with a :class:`RecRow`;
    replaces each such row by a plain dict with its ``ci95`` intervals added."""
    values: dict[str, dict[str, Any]] = {}
    for method, row in out.items():
        rec = row.get("rec")
        if not isinstance(rec, RecRow):
            continue
        warm, everyone = rec.per_user["warm"], rec.per_user["all"]
        values[method] = {"warm_users": warm.users.tolist(), "warm": warm.ndcg.tolist(),
                          "all": everyone.ndcg.tolist()}
        row["rec"] = {**rec, "ci95": {
            f"warm/ndcg@{k}": list(bootstrap_ci(warm.ndcg, N_BOOT, SEED, ALPHA)),
            f"ndcg@{k}": list(bootstrap_ci(everyone.ndcg, N_BOOT, SEED, ALPHA))}}
    return values


def _config_name(window: str) -> str:
    return f"{PER_USER_CONFIG}/{re.sub(r'[^A-Za-z0-9._-]', '_', window)}"


def _pairable(values: Mapping[str, Any], a: str, b: str) -> bool:
    return a in values and b in values and values[a]["warm_users"] == values[b]["warm_users"]


def _pooled(store: CheckpointStore, windows: list[str], current: str,
            values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{window: per-user values} of the evaluated windows up to ``current`` that have any."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows[: windows.index(current) + 1]:
        saved = values if w == current else (store.get_config(_config_name(w)) or {}).get(
            "methods")
        if saved:
            out[w] = saved
    return out


def record_rec_intervals(result: dict[str, Any], store: CheckpointStore, window: str,
                         out: dict[str, dict[str, Any]], k: int) -> None:
    """Add window ``window``'s rec intervals to ``out`` (its prequential rows) and to
    ``result["intervals"]``, and save its per-user values to ``store`` (module docstring)."""
    values = take_per_user(out, k)
    if not values:
        return
    store.put_config(_config_name(window), {"k": k, "methods": values})
    metric = f"warm/ndcg@{k}"
    tree = result.setdefault("intervals", {})
    tree.update({"metric": metric, "also": f"ndcg@{k}", "level": 1.0 - ALPHA, "n_boot": N_BOOT,
                 "seed": SEED})
    by_window = _pooled(store, list(result["evaluated_windows"]), window, values)
    tree["methods"] = {}
    for method in values:
        for part, key in (("warm", metric), ("all", f"ndcg@{k}")):
            pooled = np.concatenate([np.asarray(v[method][part], dtype=np.float64)
                                     for v in by_window.values() if method in v])
            tree["methods"].setdefault(method, {})[key] = {
                **interval(pooled), "windows": [w for w, v in by_window.items() if method in v]}
    pairs = tree.setdefault("paired", {})
    for a, b in rec_pairs(result["methods"]):
        if not _pairable(values, a, b):
            continue
        entry = pairs.setdefault(pair_key(a, b), {"a": a, "b": b, "windows": {}})
        entry["windows"][window] = paired(np.asarray(values[a]["warm"]),
                                          np.asarray(values[b]["warm"]))
        used = [w for w, v in by_window.items() if _pairable(v, a, b)]
        xs = [np.asarray(by_window[w][m]["warm"], dtype=np.float64) for m in (a, b)
              for w in used]
        entry["pooled"] = {**paired(np.concatenate(xs[:len(used)]),
                                    np.concatenate(xs[len(used):])), "windows": used}
