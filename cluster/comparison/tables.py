"""The report's tables: rows built from the pipeline's results dict, rendered as Markdown
(``summary.md``) or fixed-width text (the console); one renderer of each for the project."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cluster.comparison.report_data import (
    NAN,
    NOT_APPLICABLE,
    NOT_MEASURED,
    OURS,
    applies,
    dig,
    finite_mean,
    forgetting_detail,
    interval_verdict,
    mean_forgetting,
    method_interval,
    number,
    pooled_mean,
    secondary_metric,
    series,
    trainer_of,
    trainers_comparable,
    update_seconds,
    validate,
)


def fmt(value: float, digits: int = 4, sign: bool = False) -> str:
    if not math.isfinite(value):
        return NOT_MEASURED
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def mean_cell(values: list[float], digits: int = 4) -> str:
    mean, n = finite_mean(values)
    if n == 0:
        return NOT_MEASURED
    note = f" ({n}/{len(values)} windows)" if n < len(values) else ""
    return fmt(mean, digits) + note


def trainer_cell(result: Mapping[str, Any], method: str) -> str:
    """Where ``method``'s updates ran, and "not comparable" when its trainer setting is not
    ours'."""
    if (result["methods"].get(method) or {}).get("kind") != "neural":
        return "in-process (no trainer)"
    mine = trainer_of(result, method)
    if mine is None:
        return NOT_MEASURED
    if method != OURS and trainers_comparable(result, method, OURS) is False:
        return f"{mine} (not comparable: {OURS} ran on {trainer_of(result, OURS)})"
    return mine


def summary_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: per method, the mean over evaluated windows of each task's main and
    secondary metric, then the mean and total update wall seconds over the windows and the
    trainer the updates ran on (:func:`trainer_cell`)."""
    validate(result)
    columns: list[tuple[str, str]] = []
    for task, main in result["tasks"].items():
        columns.append((task, main))
        second = secondary_metric(main)
        if second is not None:
            columns.append((task, second))
    header = ["method"] + [f"{t} {m}" for t, m in columns] + ["update s/window", "update s total",
                                                               "trainer"]
    rows = []
    for method in result["methods"]:
        row = [method]
        for task, metric in columns:
            applicable = applies(result, method, task)
            row.append(mean_cell(series(result, method, task, metric)) if applicable
                       else NOT_APPLICABLE)
        secs = update_seconds(result, method)
        good = [s for s in secs if math.isfinite(s)]
        row += [mean_cell(secs, 2), fmt(sum(good), 2) if good else NOT_MEASURED,
                trainer_cell(result, method)]
        rows.append(row)
    return header, rows


def ci_cell(result: Mapping[str, Any], method: str, metric: str,
             with_n: bool = False) -> str:
    """Pooled per-user mean of rec ``metric`` with its bootstrap 95% interval; ``with_n``
    adds the number of (user, window) pairs behind it."""
    iv = method_interval(result, method, metric)
    if iv is None:
        mean, n = pooled_mean(result, method, metric)
        notes = ([str(n)] if with_n and n else []) + (["no interval"] if n else [])
        return fmt(mean) + (f" ({'; '.join(notes)})" if notes else "")
    cell = f"{fmt(number(iv.get('mean')))} [{fmt(number(iv.get('lo')))}, " \
           f"{fmt(number(iv.get('hi')))}]"
    used, total = len(iv.get("windows") or []), len(result["evaluated_windows"])
    notes = ([str(int(number(iv.get("n"))))] if with_n else []) + (
        [f"{used}/{total} windows"] if used < total else [])
    return cell + (f" ({'; '.join(notes)})" if notes else "")


def rec_table(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per rec method: mean over every (user, window) pair of warm, all and cold NDCG@k (with
    the bootstrap 95% interval; cold also with its number of users), and warm users'
    NDCG@k / recall@k on repeat targets (bought before) and on new-to-user targets."""
    k = result["tasks"]["rec"].split("@")[-1]
    cols = [f"warm_repeat/ndcg@{k}", f"warm_new/ndcg@{k}", f"warm_repeat/recall@{k}",
            f"warm_new/recall@{k}"]
    header = ["method", f"warm ndcg@{k} [95% CI]", f"all ndcg@{k} [95% CI]",
              f"cold ndcg@{k} [95% CI] (n)",
              *[c.replace("/", " ").replace("_", " ") for c in cols]]
    rows = []
    for method in (m for m in result["methods"] if applies(result, m, "rec")):
        rows.append([method, ci_cell(result, method, f"warm/ndcg@{k}"),
                     ci_cell(result, method, f"ndcg@{k}"),
                     ci_cell(result, method, f"cold/ndcg@{k}", with_n=True),
                     *[fmt(pooled_mean(result, method, c)[0]) for c in cols]])
    return header, rows


def paired_table(result: Mapping[str, Any], key: str = "paired",
                 metric_key: str = "metric") -> tuple[list[str], list[list[str]]]:
    """Per pair compared in ``result["intervals"][key]`` ("paired": warm users,
    "paired_cold": cold users; the metric's name is ``result["intervals"][metric_key]``):
    pooled means of both, ratio, the paired-bootstrap 95% interval of the difference, the
    verdict, and on how many windows the per-window interval was above / below 0."""
    metric = str(dig(result.get("intervals"), metric_key))
    header = ["a vs b", f"a {metric}", f"b {metric}", "ratio a/b", "a - b [95% CI]",
              "verdict", "windows a > b / a < b / n.d."]
    rows = []
    for pair, entry in (dig(result.get("intervals"), key) or {}).items():
        p = entry.get("pooled") or {}
        ma, mb, lo, hi = (number(p.get(x)) for x in ("mean_a", "mean_b", "lo", "hi"))
        per = [interval_verdict(number(w.get("lo")), number(w.get("hi")))
               for w in (entry.get("windows") or {}).values()]
        rows.append([pair, fmt(ma), fmt(mb), fmt(ma / mb, 3) if mb > 0 else NOT_MEASURED,
                     f"{fmt(number(p.get('diff')), sign=True)} [{fmt(lo, sign=True)}, "
                     f"{fmt(hi, sign=True)}]", interval_verdict(lo, hi),
                     " / ".join(str(per.count(v)) for v in
                                ("better", "worse", "not distinguishable"))])
    return header, rows


def per_window_table(result: Mapping[str, Any], task: str) -> tuple[list[str], list[list[str]]]:
    """Main metric of ``task`` per evaluated window (rows) and applicable method (columns)."""
    main = result["tasks"][task]
    methods = [m for m in result["methods"] if applies(result, m, task)]
    cols = {m: series(result, m, task, main) for m in methods}
    rows = [[w] + [fmt(cols[m][i]) for m in methods]
            for i, w in enumerate(result["evaluated_windows"])]
    return ["window"] + methods, rows


def forgetting_table(result: Mapping[str, Any],
                     method: str) -> tuple[list[str], list[list[str]]]:
    """Per earlier window j and task: best earlier version's score, latest's score, drop."""
    details = {t: forgetting_detail(result, method, t) for t in result["tasks"]}
    columns = ("best earlier", "latest", "drop")
    header = ["eval window"] + [f"{t} {c}" for t in details for c in columns]
    rows = []
    for j in (w for w in result["windows"] if any(w in d for d in details.values())):
        row = [j]
        for d in details.values():
            best, now = d.get(j, (NAN, NAN))
            row += [fmt(best), fmt(now), fmt(best - now, sign=True)]
        rows.append(row)
    means = [fmt(mean_forgetting(result, method, t)[0], sign=True) for t in details]
    return header, rows + [["mean"] + [c for m in means for c in ("", "", m)]]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width rendering for the console."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header, *rows])
