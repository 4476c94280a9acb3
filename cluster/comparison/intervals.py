"""Bootstrap intervals of the pipeline's rec metrics, computed when a window is evaluated.

    python -m cluster.pipeline --help    # no entry point; cluster.runner calls it

Every method is scored on the same users of a window (``cluster.comparison.evaluation``), so
per-user values pair up. When window ``w`` is evaluated, :func:`record_rec_intervals`:

* adds ``ci95`` to each method's rec row: the percentile-bootstrap 95% interval of mean warm
  NDCG@k and of mean NDCG@k over that window's users;
* sets ``result["intervals"]["paired"][pair]["windows"][w]``: the paired-bootstrap interval
  of the difference of per-user warm NDCG@k, for ours vs every other neural method and every
  neural method vs every rec baseline;
* does the same for cold users' NDCG@k under ``result["intervals"]["paired_cold"]``: a pair
  is compared on a window only where both methods have the same cold users. Cold users are
  few (tens over a whole run), so expect wide intervals.

When the run ends, :func:`pool_rec_intervals` computes the pooled intervals (per-user values
of every evaluated window, concatenated): per method in ``result["intervals"]["methods"]``
(warm, all and cold NDCG@k), per pair under ``"pooled"`` (warm and cold). Pooled at every
window instead, a run's cost grew with the square of its windows.

Per-user values saved before cold users were kept have no cold part: those windows are left
out of the cold intervals (their ``"windows"`` lists say which were used).

The per-user values never enter the results: they are saved to the store as
``configs/pipeline-per-user/<window>.json``, so a resumed run still pools every window.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from cluster.comparison.evaluation import RecRow
from training.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_diff
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


def _metric(part: str, k: int) -> str:
    """The rec metric name of NDCG@k over users of ``part`` ("all" has no prefix)."""
    return f"ndcg@{k}" if part == "all" else f"{part}/ndcg@{k}"


def take_per_user(out: dict[str, dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """Per-user warm, all and (where the row has them) cold NDCG@k of every method of ``out``
    with a :class:`RecRow`; replaces each such row by a plain dict with its ``ci95``
    intervals added."""
    values: dict[str, dict[str, Any]] = {}
    for method, row in out.items():
        rec = row.get("rec")
        if not isinstance(rec, RecRow):
            continue
        warm, everyone = rec.per_user["warm"], rec.per_user["all"]
        values[method] = {"warm_users": warm.users.tolist(), "warm": warm.ndcg.tolist(),
                          "all": everyone.ndcg.tolist()}
        cold = rec.per_user.get("cold")
        if cold is not None:
            values[method].update(cold_users=cold.users.tolist(), cold=cold.ndcg.tolist())
        row["rec"] = {**rec, "ci95": {
            f"warm/ndcg@{k}": list(bootstrap_ci(warm.ndcg, N_BOOT, SEED, ALPHA)),
            f"ndcg@{k}": list(bootstrap_ci(everyone.ndcg, N_BOOT, SEED, ALPHA))}}
    return values


def _config_name(window: str) -> str:
    return f"{PER_USER_CONFIG}/{re.sub(r'[^A-Za-z0-9._-]', '_', window)}"


def _pairable(values: Mapping[str, Any], a: str, b: str, part: str = "warm") -> bool:
    """Both methods have ``part``'s per-user values, on the same users."""
    users = f"{part}_users"
    return (a in values and b in values and part in values[a] and part in values[b]
            and values[a][users] == values[b][users])


def _saved(store: CheckpointStore, windows: list[str]) -> dict[str, dict[str, Any]]:
    """{window: per-user values} of the evaluated ``windows`` that have any saved."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows:
        saved = (store.get_config(_config_name(w)) or {}).get("methods")
        if saved:
            out[w] = saved
    return out


def _concat(by_window: Mapping[str, Any], windows: list[str], method: str,
            part: str) -> np.ndarray:
    return np.concatenate([np.asarray(by_window[w][method][part], dtype=np.float64)
                           for w in windows]) if windows else np.zeros(0)


def _method_intervals(by_window: Mapping[str, Any], method: str,
                      k: int) -> dict[str, dict[str, Any]]:
    """{metric: pooled interval} of ``method``'s warm, all and cold NDCG@k; a part without
    any user in the windows so far (no cold user yet, or only old saved values) is left out."""
    out: dict[str, dict[str, Any]] = {}
    for part in ("warm", "all", "cold"):
        used = [w for w, v in by_window.items() if part in v.get(method, {})]
        pooled = _concat(by_window, used, method, part)
        if pooled.size:
            out[_metric(part, k)] = {**interval(pooled), "windows": used}
    return out


def _window_pairs(pairs: dict[str, Any], result: Mapping[str, Any], window: str,
                  current: Mapping[str, Any], part: str) -> None:
    """Window ``window``'s paired intervals of ``part``'s NDCG@k for every pair of
    :func:`rec_pairs` that has the same, non-empty, ``part`` users there."""
    for a, b in rec_pairs(result["methods"]):
        if not _pairable(current, a, b, part) or not current[a][part]:
            continue
        entry = pairs.setdefault(pair_key(a, b), {"a": a, "b": b, "windows": {}})
        entry["windows"][window] = paired(np.asarray(current[a][part], dtype=np.float64),
                                          np.asarray(current[b][part], dtype=np.float64))


def _pooled_pairs(pairs: dict[str, Any], result: Mapping[str, Any],
                  by_window: Mapping[str, Any], part: str) -> None:
    """Each pair's pooled paired interval over the windows where it has the same ``part``
    users; a pair without any such user (e.g. no cold user in the run) gets none."""
    for a, b in rec_pairs(result["methods"]):
        used = [w for w, v in by_window.items() if _pairable(v, a, b, part)]
        xa, xb = (_concat(by_window, used, m, part) for m in (a, b))
        if not xa.size:
            continue
        entry = pairs.setdefault(pair_key(a, b), {"a": a, "b": b, "windows": {}})
        entry["pooled"] = {**paired(xa, xb), "windows": used}


def record_rec_intervals(result: dict[str, Any], store: CheckpointStore, window: str,
                         out: dict[str, dict[str, Any]], k: int) -> None:
    """Add window ``window``'s rec intervals to ``out`` (its prequential rows) and to
    ``result["intervals"]``, and save its per-user values to ``store`` (module docstring)."""
    values = take_per_user(out, k)
    if not values:
        return
    store.put_config(_config_name(window), {"k": k, "methods": values})
    tree = result.setdefault("intervals", {})
    tree.update({"metric": _metric("warm", k), "also": _metric("all", k),
                 "cold_metric": _metric("cold", k), "level": 1.0 - ALPHA, "n_boot": N_BOOT,
                 "seed": SEED})
    _window_pairs(tree.setdefault("paired", {}), result, window, values, "warm")
    _window_pairs(tree.setdefault("paired_cold", {}), result, window, values, "cold")


def pool_rec_intervals(result: dict[str, Any], store: CheckpointStore) -> None:
    """The pooled intervals of ``result["intervals"]`` over every evaluated window's saved
    per-user values (module docstring); nothing before :func:`record_rec_intervals` ran."""
    tree = result.get("intervals")
    by_window = _saved(store, list(result["evaluated_windows"]))
    if tree is None or not by_window:
        return
    k = int(tree["metric"].rsplit("@", 1)[1])
    last = by_window[next(reversed(by_window))]
    # The run's method order (the store keeps a saved record's keys sorted).
    methods = [m for m in result["methods"] if m in last] + \
        [m for m in last if m not in result["methods"]]
    tree["methods"] = {method: _method_intervals(by_window, method, k) for method in methods}
    _pooled_pairs(tree.setdefault("paired", {}), result, by_window, "warm")
    _pooled_pairs(tree.setdefault("paired_cold", {}), result, by_window, "cold")
