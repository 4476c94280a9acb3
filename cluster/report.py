"""The report of ``python -m cluster.pipeline``: metrics.json, summary.md and the PNG plots.

    python -m cluster.pipeline --help    # this module has no entry point; the pipeline calls it

Pure functions over the pipeline's results dict (schema 1): ``metrics.json`` is that dict with
NaN/inf as null; ``summary.md`` has the tables, forgetting, the served version and verdict lines
computed from the numbers; :mod:`cluster.plots` draws the PNGs; :func:`check_report` lists what
is wrong with a written report folder.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA = 1
NAN = float("nan")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOT_MEASURED = "not measured"
NOT_APPLICABLE = "n/a"
OURS = "incremental"


class ReportError(ValueError):
    """The results dict does not follow schema 1; the message names the offending field."""


@dataclass(frozen=True)
class ReportPaths:
    metrics_json: Path
    summary_md: Path
    plots: list[Path]


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


def update_seconds(result: Mapping[str, Any], method: str) -> list[float]:
    """Update wall seconds of ``method`` for each window (NaN where missing)."""
    ups = result.get("updates") or {}
    return [number(dig(ups, w, method, "wall_s")) for w in result["windows"]]


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


# --------------------------------------------------------------------------- tables
def _fmt(value: float, digits: int = 4, sign: bool = False) -> str:
    if not math.isfinite(value):
        return NOT_MEASURED
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _mean_cell(values: list[float], digits: int = 4) -> str:
    mean, n = finite_mean(values)
    if n == 0:
        return NOT_MEASURED
    note = f" ({n}/{len(values)} windows)" if n < len(values) else ""
    return _fmt(mean, digits) + note


def summary_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: per method, the mean over evaluated windows of each task's main and
    secondary metric, then the mean and total update wall seconds over the windows."""
    validate(result)
    columns: list[tuple[str, str]] = []
    for task, main in result["tasks"].items():
        columns.append((task, main))
        second = secondary_metric(main)
        if second is not None:
            columns.append((task, second))
    header = ["method"] + [f"{t} {m}" for t, m in columns] + ["update s/window", "update s total"]
    rows = []
    for method in result["methods"]:
        row = [method]
        for task, metric in columns:
            applicable = applies(result, method, task)
            row.append(_mean_cell(series(result, method, task, metric)) if applicable
                       else NOT_APPLICABLE)
        secs = update_seconds(result, method)
        good = [s for s in secs if math.isfinite(s)]
        row += [_mean_cell(secs, 2), _fmt(sum(good), 2) if good else NOT_MEASURED]
        rows.append(row)
    return header, rows


def per_window_table(result: Mapping[str, Any], task: str) -> tuple[list[str], list[list[str]]]:
    """Main metric of ``task`` per evaluated window (rows) and applicable method (columns)."""
    main = result["tasks"][task]
    methods = [m for m in result["methods"] if applies(result, m, task)]
    cols = {m: series(result, m, task, main) for m in methods}
    rows = [[w] + [_fmt(cols[m][i]) for m in methods]
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
            row += [_fmt(best), _fmt(now), _fmt(best - now, sign=True)]
        rows.append(row)
    means = [_fmt(mean_forgetting(result, method, t)[0], sign=True) for t in details]
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


# --------------------------------------------------------------------------- summary.md
def _title(result: Mapping[str, Any]) -> list[str]:
    src = result.get("source") or {}
    wins = result["windows"]
    span = f"{wins[0]} .. {wins[-1]} ({len(wins)} windows, " if wins else "(no windows, "
    path = f", path `{src['path']}`" if src.get("path") else ""
    return [f"# ShopStream report: {src.get('name', 'unknown source')}, "
            f"{src.get('freq', '?')} windows {span}{len(result['evaluated_windows'])} evaluated)",
            "", f"Created at {result.get('created_at', 'unknown time')}; source "
            f"`{src.get('name', '?')}`{path}. Prequential: each window is first scored by every "
            "method's current model, then the methods update on it; means are over the "
            "evaluated windows.", ""]


def _sweeps(result: Mapping[str, Any]) -> list[str]:
    sweeps = result.get("sweeps") or {}
    if not sweeps:
        return []
    lines = ["## Sweeps", "", "Each sweep trains from the version before `trained on` and is "
             "scored on `scored on` (both already seen); its best config feeds ours' later "
             "updates (column `config_used` of metrics.json's updates).", ""]
    rows = []
    for after, sweep in sweeps.items():
        best = sweep.get("best_config") or {}
        tuned = {**best.get("train_config", {}), **best.get("incremental_config", {})}
        rows.append([str(after), str(sweep.get("trained_on")), str(sweep.get("scored_on")),
                     f"{number(sweep.get('seconds')):.0f}",
                     ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in tuned.items()) or NOT_MEASURED])
    table = markdown_table(["after window", "trained on", "scored on", "seconds",
                            "best config"], rows)
    return [*lines, table, ""]


def _served(result: Mapping[str, Any]) -> list[str]:
    served = result.get("served")
    if not isinstance(served, dict):
        return [f"- Served version: {NOT_MEASURED} (no serving step in this run)."]
    version = served.get("version")
    shown = f"`{version}`" if version else f"no single version ({served.get('deployments')})"
    lines = [f"Served version: {shown}; last published: `{served.get('last_published')}`."]
    if version != served.get("last_published"):
        lines.append("The served version is NOT the last published one.")
    if served.get("url"):
        lines.append(f"URL: {served['url']}")
    queries = served.get("queries") or []
    codes = [f"{q.get('endpoint')} -> {q.get('status')}" for q in queries if isinstance(q, dict)]
    lines.append(f"Smoke queries: {', '.join(codes) if codes else 'none'}.")
    return [f"- {line}" for line in lines]


def summary_markdown(result: dict[str, Any], plots: list[str]) -> str:
    out = _title(result) + ["## Methods", ""]
    out += [f"- `{m}`: {d.get('label', m)} ({d.get('kind', '?')}; tasks: "
            f"{', '.join(d['tasks'])})" for m, d in result["methods"].items()]
    out += ["", "## Main table", "", markdown_table(*summary_table(result)), ""]
    for task, main in result["tasks"].items():
        out += [f"## {task}: {main} per evaluated window", "",
                markdown_table(*per_window_table(result, task)), ""]
    out += ["## Forgetting", "", "Drop = best score on an earlier window by a version trained "
            "before the latest one minus the latest version's score there; positive = forgot.", ""]
    for method in neural_methods(result):
        measured = any(forgetting_detail(result, method, t) for t in result["tasks"])
        table = markdown_table(*forgetting_table(result, method)) if measured else NOT_MEASURED
        out += [f"### {method}", "", table + ("" if measured else "."), ""]
    out += _sweeps(result)
    out += ["## Serving", "", *_served(result), "", "## Verdict", ""]
    from cluster.verdicts import verdicts  # it builds on this module's helpers

    out += [f"- {line}" for line in verdicts(result)]
    out += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots], "", "## Settings", "",
            "```json", json.dumps(result.get("settings", {}), indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def write_report(result: dict[str, Any], directory: Path) -> ReportPaths:
    """Write metrics.json (strict JSON), summary.md and the PNGs into ``directory``."""
    # Imported here because cluster.plots reads the results dict through this module.
    from cluster.plots import write_plots

    clean = to_strict_json(result)
    validate(clean)
    directory.mkdir(parents=True, exist_ok=True)
    metrics = directory / "metrics.json"
    metrics.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plots = write_plots(clean, directory)
    summary = directory / "summary.md"
    summary.write_text(summary_markdown(clean, [p.name for p in plots]), encoding="utf-8")
    logger.info("report written to %s (%d plots)", directory, len(plots))
    return ReportPaths(metrics_json=metrics, summary_md=summary, plots=plots)


# --------------------------------------------------------------------------- check
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite constant {name} is not strict JSON")


def _metric_problems(result: Mapping[str, Any]) -> list[str]:
    problems = []
    for w, method, (task, main) in product(result["evaluated_windows"], result["methods"],
                                           result["tasks"].items()):
        if not applies(result, method, task):
            continue
        entry = dig(result["prequential"], w, method, task)
        # A window without any fraud has an undefined AP for every method: not a bug.
        undefined = dig(entry, "n_pos") == 0 and number(dig(entry, "n")) > 0
        if math.isfinite(number(dig(entry, main))) or undefined:
            continue
        if not isinstance(entry, dict):
            what = f"has no {task} metrics"
        elif main not in entry:
            what = f"has no {main}"
        else:
            what = f"has {main} = {entry[main]!r}, not a finite number"
        problems.append(f"{method}: evaluated window {w} {what}")
    return problems


def check_report(directory: Path) -> list[str]:
    """Problems of the report in ``directory`` (empty = fine): strict metrics.json, a finite
    main metric for every applicable method/task/evaluated window, every expected PNG."""
    from cluster.plots import expected_plots  # see write_report

    path = directory / "metrics.json"
    if not path.is_file():
        return [f"{path}: missing"]
    try:
        result = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        validate(result)
    except ValueError as exc:  # JSONDecodeError and ReportError are ValueErrors
        return [f"{path}: {exc}"]
    problems = _metric_problems(result)
    summary = directory / "summary.md"
    if not summary.is_file() or summary.stat().st_size == 0:
        problems.append(f"{summary}: missing or empty")
    for name in expected_plots(result):
        png = directory / name
        if not png.is_file() or png.stat().st_size == 0:
            problems.append(f"plot {name}: missing or empty")
        elif png.read_bytes()[: len(PNG_MAGIC)] != PNG_MAGIC:
            problems.append(f"plot {name}: not a PNG")
    return problems
