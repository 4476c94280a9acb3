"""Verdict lines of the report: claims computed from the numbers, never beyond them.

Comparisons pair windows where both methods have a finite value; a missing method or
task says "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cluster.report import NOT_MEASURED, OURS, applies, mean_forgetting, series, update_seconds


def _missing(result: Mapping[str, Any], task: str, methods: tuple[str, ...]) -> str | None:
    if task not in result["tasks"]:
        return f"{task}: {NOT_MEASURED} (no {task} task in this data)"
    for m in methods:
        if m not in result["methods"] or not applies(result, m, task):
            return f"{task}: {' vs '.join(methods)}: {NOT_MEASURED} ({m} was not run on {task})"
    return None


def _relation(a: float, b: float, higher: str, lower: str) -> str:
    return higher if a > b else lower if a < b else "tied with"


def _paired(xs: list[float], ys: list[float]) -> tuple[float, float, list[tuple[float, float]]]:
    """Means of ``xs`` and ``ys`` over the positions where both are finite, and those pairs."""
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    n = max(1, len(pairs))
    return sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n, pairs


def _ratio(a: float, b: float) -> str:
    return f"ratio {a / b:.3f}" if b > 0 else "ratio undefined"


def compare_line(result: Mapping[str, Any], a: str, b: str, task: str) -> str:
    """Paired (windows where both are finite) comparison of the main metric of ``a`` and ``b``."""
    missing = _missing(result, task, (a, b))
    if missing:
        return missing
    main = result["tasks"][task]
    ma, mb, pairs = _paired(series(result, a, task, main), series(result, b, task, main))
    if not pairs:
        return f"{task}: {a} vs {b}: {NOT_MEASURED} (no window where both have a finite {main})"
    wins = sum(x > y for x, y in pairs)
    rel = _relation(ma, mb, "better than", "worse than")
    return (f"{task}: {a} is {rel} {b} on mean {main}: {ma:.4f} vs {mb:.4f} ({_ratio(ma, mb)}; "
            f"higher on {wins}/{len(pairs)} evaluated windows)")


def time_line(result: Mapping[str, Any], a: str, b: str) -> str:
    """Paired comparison of mean update wall seconds per window."""
    if a not in result["methods"] or b not in result["methods"]:
        return f"update cost: {a} vs {b}: {NOT_MEASURED} (method not run)"
    ma, mb, pairs = _paired(update_seconds(result, a), update_seconds(result, b))
    if not pairs:
        return f"update cost: {a} vs {b}: {NOT_MEASURED} (no window timed for both)"
    rel = _relation(ma, mb, "slower than", "faster than")
    return (f"update cost: {a} is {rel} {b}: {ma:.2f} s vs {mb:.2f} s mean wall time per "
            f"window ({_ratio(ma, mb)}; {len(pairs)} windows)")


def forgetting_line(result: Mapping[str, Any], a: str, b: str, task: str) -> str:
    missing = _missing(result, task, (a, b))
    if missing:
        return missing
    fa, na = mean_forgetting(result, a, task)
    fb, nb = mean_forgetting(result, b, task)
    if na == 0 or nb == 0:
        return f"{task}: forgetting of {a} vs {b}: {NOT_MEASURED} (no forgetting evaluation)"
    rel = _relation(fa, fb, "forgets more than", "forgets less than")
    if rel == "tied with":
        rel = "forgets as much as"
    return (f"{task}: {a} {rel} {b}: mean drop {fa:+.4f} vs {fb:+.4f} of "
            f"{result['tasks'][task]} (best earlier version minus latest; {na} vs {nb} windows)")


def verdicts(result: Mapping[str, Any]) -> list[str]:
    """Claims computed from the numbers; a missing method or task says 'not measured'."""
    tasks = list(dict.fromkeys([*result["tasks"], "rec", "fraud"]))
    lines = [compare_line(result, OURS, "full_retrain", t) for t in tasks]
    lines.append(time_line(result, OURS, "full_retrain"))
    lines += [forgetting_line(result, OURS, "incremental_no_replay", t) for t in tasks]
    lines += [compare_line(result, OURS, b, "rec") for b in ("repeat_then_popular", "popularity")]
    lines.append(compare_line(result, OURS, "hist_gradient_boosting", "fraud"))
    return lines
