"""Verdict lines of the report: claims computed from the numbers, never beyond them.

A rec comparison says "better" or "worse" only when the paired-bootstrap 95% interval of the
per-user difference of warm NDCG@k (pooled over the evaluated windows, the same users for both
methods; see :mod:`cluster.comparison.intervals`) excludes 0, and "not distinguishable"
otherwise. Where a run has no interval (fraud, or a results dict from before intervals), the
window means are shown without a better/worse claim. Update costs are compared only when both
methods ran on the same trainer, over the updates after the first version. A missing method
or task says "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cluster.comparison.report_data import (
    NOT_MEASURED,
    OURS,
    applies,
    dig,
    interval_verdict,
    mean_forgetting,
    number,
    paired_interval,
    series,
    trainer_of,
    trainers_comparable,
    update_seconds,
    update_values,
)


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


def _interval_line(result: Mapping[str, Any], a: str, b: str, task: str) -> str | None:
    """The paired-interval verdict of ``a`` vs ``b``, or None when the run has none."""
    entry = paired_interval(result, a, b)
    if entry is None:
        return None
    p = entry["pooled"]
    ma, mb, lo, hi = (number(p.get(x)) for x in ("mean_a", "mean_b", "lo", "hi"))
    if not all(math.isfinite(v) for v in (ma, mb, lo, hi)):
        return None
    metric = str(dig(result.get("intervals"), "metric"))
    level = number(dig(result.get("intervals"), "level"))
    ratio = f"{ma / mb:.2f}x" if mb > 0 else "(ratio undefined)"
    return (f"{task}: {a}'s mean {metric} is {ratio} {b}'s ({ma:.4f} vs {mb:.4f} over "
            f"{int(number(p.get('n')))} users in {len(p.get('windows') or [])} windows), paired "
            f"{100 * level:.0f}% CI of the difference [{lo:+.4f}, {hi:+.4f}]: "
            f"{interval_verdict(lo, hi)}")


def compare_line(result: Mapping[str, Any], a: str, b: str, task: str) -> str:
    """``a`` vs ``b`` on ``task``: the paired-interval verdict where the run has one, else the
    window means (paired over windows where both are finite) without a better/worse claim."""
    missing = _missing(result, task, (a, b))
    if missing:
        return missing
    line = _interval_line(result, a, b, task) if task == "rec" else \
        pooled_fraud_line(result, a, b) if task == "fraud" else None
    if line is not None:
        return line
    main = result["tasks"][task]
    ma, mb, pairs = _paired(series(result, a, task, main), series(result, b, task, main))
    if not pairs:
        return f"{task}: {a} vs {b}: {NOT_MEASURED} (no window where both have a finite {main})"
    wins = sum(x > y for x, y in pairs)
    return (f"{task}: {a} vs {b} on mean {main}: {ma:.4f} vs {mb:.4f} ({_ratio(ma, mb)}; "
            f"higher on {wins}/{len(pairs)} evaluated windows): no better/worse claim (no "
            "interval in this run)")


def time_line(result: Mapping[str, Any], a: str, b: str) -> str:
    """Paired comparison of mean update wall seconds per window, over the updates after the
    first version; "not comparable" when the two ran on different trainers.

    The first window is shown apart, not averaged in: there every neural arm fits its first
    version from scratch on the same data, so its times differ only by the process start-up
    (loading the encoder, filling the shared title cache, first imports), which whichever
    arm runs first pays. The pipeline runs ours first; run in the other order, the full
    retrain paid it (``docs/trainer.md``, "Comparing update costs")."""
    if a not in result["methods"] or b not in result["methods"]:
        return f"update cost: {a} vs {b}: {NOT_MEASURED} (method not run)"
    xs, ys = update_seconds(result, a), update_seconds(result, b)
    ma, mb, pairs = _paired(xs[1:], ys[1:])
    first = (f"; first version, fitted from scratch by both: {xs[0]:.2f} s vs {ys[0]:.2f} s, "
             "the arm run first paying the process start-up"
             if xs and math.isfinite(xs[0]) and math.isfinite(ys[0]) else "")
    if not pairs:
        return (f"update cost: {a} vs {b}: {NOT_MEASURED} (no update after the first version "
                f"timed for both){first}")
    per = f"mean wall time per update after the first version ({len(pairs)} windows"
    comparable = trainers_comparable(result, a, b)
    if comparable is False:
        return (f"update cost: {a} vs {b}: not comparable ({a} ran on the "
                f"{trainer_of(result, a)} trainer, {b} on {trainer_of(result, b)}): {ma:.2f} s "
                f"vs {mb:.2f} s {per}){first}")
    trainer = ("trainers not recorded, comparability unknown" if not comparable
               else f"both on the {trainer_of(result, a)} trainer"
               if trainer_of(result, a) == trainer_of(result, b)
               else f"one trainer policy: {a} {trainer_of(result, a)}, "
                    f"{b} {trainer_of(result, b)}")
    sa, sb, steps = _paired(update_values(result, a, "steps")[1:],
                            update_values(result, b, "steps")[1:])
    work = f"; {sa:.1f} vs {sb:.1f} training steps" if len(steps) == len(pairs) else ""
    rel = _relation(ma, mb, "slower than", "faster than")
    return (f"update cost: {a} is {rel} {b}: {ma:.2f} s vs {mb:.2f} s {per}, "
            f"{_ratio(ma, mb)}; {trainer}{work}){first}")


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


def pooled_fraud_line(result: Mapping[str, Any], a: str, b: str) -> str | None:
    """``a`` vs ``b`` on the pooled AUC-PR (and alert-budget precision) by paired interval;
    None when the run has no pooled fraud interval for the pair."""
    tree = result.get("fraud_intervals") or {}
    row = tree.get("paired", {}).get(f"{a} vs {b}")
    methods = tree.get("methods", {})
    if not row or a not in methods or b not in methods:
        return None
    ma, mb = methods[a]["auc_pr"]["value"], methods[b]["auc_pr"]["value"]
    if not all(math.isfinite(number(v)) for v in (ma, mb, row["auc_pr"]["lo"])):
        return None
    ap, budget = row["auc_pr"], row["precision@budget"]
    ratio = f"{ma / mb:.2f}x" if mb > 0 else "(ratio undefined)"
    return (f"fraud: {a}'s pooled auc_pr is {ratio} {b}'s ({ma:.4f} vs {mb:.4f} over "
            f"{tree['n']} transactions, {tree['n_pos']} frauds, {tree['windows']} windows), "
            f"paired {100 * tree['level']:.0f}% CI of the difference [{ap['lo']:+.4f}, "
            f"{ap['hi']:+.4f}]: {interval_verdict(ap['lo'], ap['hi'])}; precision at the alert "
            f"budget {budget['diff']:+.4f} [{budget['lo']:+.4f}, {budget['hi']:+.4f}]: "
            f"{interval_verdict(budget['lo'], budget['hi'])}")
