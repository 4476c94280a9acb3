"""The report of ``python -m cluster.pipeline``: metrics.json, summary.md and the PNG plots.

    python -m cluster.pipeline --help    # this module has no entry point; the pipeline calls it

Pure functions over the pipeline's results dict (schema 1): ``metrics.json`` is that dict with
NaN/inf as null; ``summary.md`` has the tables, forgetting, the served version and verdict lines
computed from the numbers; :mod:`cluster.comparison.plots` draws the PNGs; :func:`check_report`
lists what is wrong with a written report folder.
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

from cluster.comparison.arms import FULL, NO_REPLAY
from cluster.comparison.fraud_intervals import fraud_table, per_window_fraud_table
from cluster.comparison.plots import expected_plots, write_plots
from cluster.comparison.report_data import (  # noqa: F401  (re-exported: the report's public helpers)
    NAN,
    NOT_APPLICABLE,
    NOT_MEASURED,
    OURS,
    SCHEMA,
    ReportError,
    applies,
    dig,
    finite_mean,
    forgetting_detail,
    interval_verdict,
    mean_forgetting,
    mean_phases,
    method_interval,
    neural_methods,
    number,
    paired_interval,
    pooled_mean,
    secondary_metric,
    series,
    to_strict_json,
    trainer_of,
    trainer_setting,
    trainers_comparable,
    update_seconds,
    validate,
)
from cluster.comparison.staleness import gate_line, staleness_markdown
from cluster.comparison.tables import (
    forgetting_table,
    markdown_table,
    paired_table,
    per_window_table,
    rec_table,
    summary_table,
)
from cluster.comparison.verdicts import verdicts

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ReportPaths:
    metrics_json: Path
    summary_md: Path
    plots: list[Path]


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


def _phases_note(result: Mapping[str, Any]) -> list[str]:
    """Where ours' and the full retrain's update wall time went, phase by phase (both run
    training.incremental, which times the same laps)."""
    lines = []
    for method in (OURS, FULL):
        phases, n = mean_phases(result, method)
        if not n:
            continue
        total = sum(phases.values())
        parts = ", ".join(f"{name} {s:.2f} s ({s / total:.0%})"
                          for name, s in phases.items()) if total > 0 else ", ".join(phases)
        lines.append(f"Where `{method}`'s update wall time goes (mean over {n} windows, "
                     f"{total:.2f} s): {parts}.")
    return lines


def _cost_note(result: Mapping[str, Any]) -> list[str]:
    """A plain statement of whether the neural arms' update wall times are comparable, and
    where ours' time goes."""
    neural = neural_methods(result)
    if not neural:
        return []
    first = ([f"`update s/window` averages every window, the first included, where each neural "
              f"arm fits its first version from scratch and the arm run first (`{OURS}`) also "
              "pays the process start-up; the update-cost verdict compares the updates after "
              "the first version."] if len(neural) > 1 else [])
    return _comparability_note(result, neural) + first + _phases_note(result)


def _comparability_note(result: Mapping[str, Any], neural: list[str]) -> list[str]:
    used = {m: trainer_setting(result, m) for m in neural}
    if any(t is None for t in used.values()):
        return ["Update wall times: the trainer of some neural arm is not recorded, so whether "
                "their update times are comparable is not known."]
    if len(set(used.values())) == 1:
        ran = "; ".join(f"{m}: {trainer_of(result, m)}" for m in neural)
        return [f"Update wall times: every neural arm ran with trainer `{used[neural[0]]}` "
                f"(comparable; {ran})."]
    ours = used.get(OURS)
    other = sorted({str(t) for m, t in used.items() if m != OURS and t != ours})
    return [f"Update wall times are NOT comparable: `{OURS}` ran on the `{ours}` trainer, "
            f"the other neural arms on `{', '.join(other)}` "
            "(see the trainer column)."]


def _rec_sections(result: Mapping[str, Any]) -> list[str]:
    k = result["tasks"]["rec"].split("@")[-1]
    out = ["## rec: per-user means with 95% intervals", "",
           "Means over every (user, window) pair of the evaluated windows. Warm users bought "
           "before the window; their targets split into repeat items (bought by that user in "
           "an earlier window) and new-to-user items, scored on the same ranked list (a user "
           "without a target of the kind is left out). Intervals: percentile bootstrap over "
           "users, pooled over the windows.", "", markdown_table(*rec_table(result)), ""]
    if dig(result.get("intervals"), "paired"):
        out += [f"### rec: paired differences of warm ndcg@{k}", "",
                "Each pair is scored on the same users; the interval is a paired bootstrap of "
                "the per-user difference, pooled over the windows. better / worse only when it "
                "excludes 0.", "", markdown_table(*paired_table(result)), ""]
    if dig(result.get("intervals"), "paired_cold"):
        out += [f"### rec: paired differences of cold-user ndcg@{k}", "",
                "The same paired comparison on cold users (no purchase before the window): "
                "they are few (n in the table above), so the intervals are wide and most "
                "verdicts will be \"not distinguishable\".", "",
                markdown_table(*paired_table(result, "paired_cold", "cold_metric")), ""]
    return out


def summary_markdown(result: dict[str, Any], plots: list[str]) -> str:
    out = _title(result) + ["## Methods", ""]
    out += [f"- `{m}`: {d.get('label', m)} ({d.get('kind', '?')}; tasks: "
            f"{', '.join(d['tasks'])})" for m, d in result["methods"].items()]
    out += ["", "## Main table", "", markdown_table(*summary_table(result)), "",
            *_cost_note(result), ""]
    if "rec" in result["tasks"]:
        out += _rec_sections(result)
    if result.get("fraud_intervals"):
        out += ["## fraud: pooled metrics with 95% intervals", "", *fraud_table(result)]
        out += ["## fraud: each window with 95% intervals", "", *per_window_fraud_table(result)]
    out += ["## Staleness of the live model", "", *staleness_markdown(result), "",
            *gate_line(result, NO_REPLAY), *gate_line(result, FULL)]
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
    out += [f"- {line}" for line in verdicts(result)]
    out += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots], "", "## Settings", "",
            "```json", json.dumps(result.get("settings", {}), indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def write_report(result: dict[str, Any], directory: Path) -> ReportPaths:
    """Write metrics.json (strict JSON), summary.md and the PNGs into ``directory``."""
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
