"""Read access to the pipeline's results dict (schema 1), shared by the report modules.

    python -m cluster.pipeline --help    # no entry point; cluster.comparison.report uses it

:mod:`cluster.comparison.report` (tables, summary.md, check), :mod:`cluster.comparison.verdicts` and
:mod:`cluster.comparison.plots` all read the results through these helpers, so none of them imports
another for them (no import cycle).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = 1
NAN = float("nan")
NOT_MEASURED = "not measured"
NOT_APPLICABLE = "n/a"
OURS = "incremental"


class ReportError(ValueError):
    """The results dict does not follow schema 1; the message names the offending field."""


# --------------------------------------------------------------------------- dict access
def to_strict_json(obj: Any, where: str = "result") -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: NaN/inf -> None,
    numpy scalars/arrays -> Python, Path -> str; anything else non-JSON raises ReportError."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_strict_json(obj.tolist(), where)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        for key in obj:
            if not isinstance(key, str):
                raise ReportError(f"{where}: key {key!r} is not a string")
        return {k: to_strict_json(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ReportError(f"{where}: {type(obj).__name__} is not JSON data")


def validate(result: Mapping[str, Any]) -> None:
    """Raise ReportError naming the field unless ``result`` has the schema-1 skeleton."""
    if result.get("schema") != SCHEMA:
        raise ReportError(f"schema: expected {SCHEMA}, got {result.get('schema')!r}")
    for key, kind in (("windows", list), ("evaluated_windows", list), ("tasks", dict),
                      ("methods", dict), ("prequential", dict)):
        if not isinstance(result.get(key), kind):
            raise ReportError(f"{key}: expected a {kind.__name__}, got {result.get(key)!r}")
    unknown = [w for w in result["evaluated_windows"] if w not in result["windows"]]
    if unknown:
        raise ReportError(f"evaluated_windows: {unknown} are not in windows")
    for name, desc in result["methods"].items():
        if not isinstance(desc, dict) or not isinstance(desc.get("tasks"), list):
            raise ReportError(f"methods[{name!r}]: expected a dict with a 'tasks' list")


def dig(tree: Any, *keys: str) -> Any:
    """``tree[k0][k1]...``, or None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def number(value: Any) -> float:
    """``value`` as a float; NaN for null, missing, bools and non-numbers."""
    if isinstance(value, (bool, np.bool_)):
        return NAN
    return float(value) if isinstance(value, (int, float, np.integer, np.floating)) else NAN


def applies(result: Mapping[str, Any], method: str, task: str) -> bool:
    desc = result["methods"].get(method)
    return task in result["tasks"] and isinstance(desc, dict) and task in desc.get("tasks", [])


def secondary_metric(main: str) -> str | None:
    """The second metric shown next to ``main``: recall@k next to ndcg@k, ROC-AUC next to AP."""
    if main.startswith("ndcg@"):
        return "recall@" + main.removeprefix("ndcg@")
    return {"auc_pr": "roc_auc"}.get(main)


def series(result: Mapping[str, Any], method: str, task: str, metric: str) -> list[float]:
    """``metric`` of ``method`` on ``task`` for each evaluated window (NaN where missing)."""
    pre = result["prequential"]
    return [number(dig(pre, w, method, task, metric)) for w in result["evaluated_windows"]]


def update_values(result: Mapping[str, Any], method: str, field: str) -> list[float]:
    """A numeric ``field`` of ``method``'s update rows (``wall_s``, ``steps``) for each
    window (NaN where missing)."""
    ups = result.get("updates") or {}
    return [number(dig(ups, w, method, field)) for w in result["windows"]]


def update_seconds(result: Mapping[str, Any], method: str) -> list[float]:
    """Update wall seconds of ``method`` for each window (NaN where missing)."""
    return update_values(result, method, "wall_s")


def finite_mean(values: list[float]) -> tuple[float, int]:
    """(mean of the finite values, how many there were); NaN when none."""
    good = [v for v in values if math.isfinite(v)]
    return (sum(good) / len(good) if good else NAN), len(good)


def forgetting_detail(result: Mapping[str, Any], method: str,
                      task: str) -> dict[str, tuple[float, float]]:
    """eval window j -> (best score on j of a version trained up to a window in [j, latest),
    the latest version's score on j), for the j before the latest version's window.

    The latest version is left out of the best (as in Chaudhry et al. 2018), so the drop
    ``best - latest`` is negative when later training improved window j."""
    tree = dig(result.get("forgetting"), method)
    order = {w: i for i, w in enumerate(result["windows"])}
    versions = [w for w in result["windows"] if isinstance(dig(tree, w), dict)]
    if len(versions) < 2:
        return {}
    latest = versions[-1]
    out: dict[str, tuple[float, float]] = {}
    for j in result["windows"][: order[latest]]:
        now = number(dig(tree, latest, j, task))
        before = [number(dig(tree, v, j, task)) for v in versions[:-1] if order[v] >= order[j]]
        before = [b for b in before if math.isfinite(b)]
        if before and math.isfinite(now):
            out[j] = (max(before), now)
    return out


def mean_forgetting(result: Mapping[str, Any], method: str, task: str) -> tuple[float, int]:
    """(mean drop best - latest over the earlier windows, how many windows); positive = forgot."""
    detail = forgetting_detail(result, method, task)
    return finite_mean([best - now for best, now in detail.values()])


def neural_methods(result: Mapping[str, Any]) -> list[str]:
    return [m for m, d in result["methods"].items() if d.get("kind") == "neural"]




# --------------------------------------------------------------------------- per-user pooling
def pooled_mean(result: Mapping[str, Any], method: str, metric: str) -> tuple[float, int]:
    """(mean of rec ``metric`` over every (user, window) pair of the evaluated windows, how
    many pairs): window means weighted by their user counts (``{part}/n_users``, or
    ``n_users`` for a metric of all users), which is the mean of the pooled per-user values.
    NaN when no window has both."""
    part = metric.split("/")[0] if "/" in metric else None
    count = f"{part}/n_users" if part else "n_users"
    total, users = 0.0, 0
    for w in result["evaluated_windows"]:
        row = dig(result["prequential"], w, method, "rec")
        value, n = number(dig(row, metric)), number(dig(row, count))
        if math.isfinite(value) and math.isfinite(n) and n > 0:
            total += value * n
            users += int(n)
    return (total / users if users else NAN), users


def method_interval(result: Mapping[str, Any], method: str,
                    metric: str) -> dict[str, Any] | None:
    """The pooled bootstrap interval of ``method``'s rec ``metric`` ({"mean", "lo", "hi",
    "n", "windows"}), or None when the run has none."""
    entry = dig(result.get("intervals"), "methods", method, metric)
    return entry if isinstance(entry, dict) else None


def paired_interval(result: Mapping[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """The paired-bootstrap entry of ``a`` vs ``b`` ({"a", "b", "windows": {w: ...},
    "pooled": {"mean_a", "mean_b", "diff", "lo", "hi", "n", "windows"}}), or None."""
    entry = dig(result.get("intervals"), "paired", f"{a} vs {b}")
    return entry if isinstance(dig(entry, "pooled"), dict) else None


def interval_verdict(lo: float, hi: float) -> str:
    """"better" / "worse" when the interval of a difference excludes 0, else
    "not distinguishable"."""
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "not distinguishable"


# --------------------------------------------------------------------------- trainers
def trainer_setting(result: Mapping[str, Any], method: str) -> str | None:
    """The trainer setting of ``method``'s updates: ours' ``settings.incremental.trainer``,
    the other neural arms' ``settings.arms_trainer``; None for baselines (fit in-process,
    no trainer) and where the settings do not say."""
    desc = result["methods"].get(method) or {}
    if desc.get("kind") != "neural":
        return None
    settings = result.get("settings") or {}
    value = update_setting(result, "scaling", "trainer") if method == OURS \
        else settings.get("arms_trainer")
    return value if isinstance(value, str) else None


def update_setting(result: Mapping[str, Any], part: str, name: str) -> Any:
    """One of ours' update settings as the run recorded it: ``settings.incremental`` holds
    the composed config (``part``: source, store, scaling or continual), or, in runs
    recorded before it was composed, the flat settings."""
    incremental = dig(result.get("settings") or {}, "incremental")
    nested = dig(incremental, part, name)
    return nested if nested is not None else dig(incremental, name)


def trainer_of(result: Mapping[str, Any], method: str) -> str | None:
    """The trainer setting, and for ``auto`` which trainers its updates ran on, e.g.
    ``auto (local x3, ray x1)``."""
    setting = trainer_setting(result, method)
    if setting != "auto":
        return setting
    updates = result.get("updates") or {}
    ran = Counter(str(t) for w in result["windows"]
                  if (t := dig(updates, w, method, "trainer")) is not None)
    if not ran:
        return setting
    return f"auto ({', '.join(f'{t} x{n}' for t, n in sorted(ran.items()))})"


def mean_phases(result: Mapping[str, Any], method: str) -> tuple[dict[str, float], int]:
    """(mean wall seconds of each update phase over the windows that recorded phases, how
    many windows); phases in the order the update runs them."""
    rows = [dig(result.get("updates") or {}, w, method, "phases") for w in result["windows"]]
    rows = [r for r in rows if isinstance(r, Mapping)]
    names: dict[str, None] = {n: None for r in rows for n in r}
    return {n: float(np.mean([number(r.get(n, 0.0)) for r in rows])) for n in names}, len(rows)


def trainers_comparable(result: Mapping[str, Any], a: str, b: str) -> bool | None:
    """Whether two neural methods' update wall times come from the same trainer setting
    (None when either is not recorded). Under ``auto`` both follow one policy, so each
    update's cost is what a user of that setting pays."""
    ta, tb = trainer_setting(result, a), trainer_setting(result, b)
    return None if ta is None or tb is None else ta == tb
