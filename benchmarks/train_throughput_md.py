"""The Markdown of ``benchmarks/train_throughput.py``'s result (tables, ratios, the update's
wall-time breakdown and the targets)."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None or value == "" else format(value, spec)


def throughput_md(tp: dict[str, Any]) -> list[str]:
    cfg = tp["train_config"]
    lines = [f"### Throughput: median of {len(tp['rounds'])} alternating round(s); "
             f"{tp['examples']['rec']} rec + {tp['examples']['fraud']} fraud examples, "
             f"batch {cfg['batch_size']}, {cfg['epochs']} epoch(s)", "",
             "| arm | torch threads | steady samples/s | overall samples/s | first step s | "
             "loop s | fit() s | start-up s |", "|---|---|---|---|---|---|---|---|"]
    for name, m in tp["median"].items():
        lines.append(" | ".join([f"| {name}", fmt(m["torch_threads"], ".0f"),
                                 fmt(m["steady_samples_per_s"], ".0f"),
                                 fmt(m["samples_per_s"], ".0f"), fmt(m["first_step_s"], ".2f"),
                                 fmt(m["train_s"], ".1f"), fmt(m.get("fit_s"), ".1f"),
                                 fmt(m.get("startup_s"), ".1f")]) + " |")
    lines += ["", "| ratio | per round | median |", "|---|---|---|"]
    lines += [f"| {k} | {', '.join(fmt(v) for v in values)} | {fmt(tp['median_ratio'][k])} |"
              for k, values in tp["ratios"].items()]
    if tp["two_workers_skipped"]:
        lines.append(f"\n2 workers skipped: {tp['two_workers_skipped']}")
    return lines


def incremental_md(inc: dict[str, Any]) -> list[str]:
    q, k = inc["quality"], f"ndcg@{inc['train_config']['eval_k']}"
    lines = [f"### Incremental update on window t={inc['t']} ({inc['updated_window']}) vs full "
             f"retrain on windows 0..t: {inc['workers']} Ray worker(s), "
             f"{inc['train_config']['epochs']} epoch(s); quality on {inc['eval_window']}", "",
             f"| run | wall s | fit() s | loop s | start-up s | steps | {k} | AUC-PR |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("incremental", "full_retrain", "stale_t-1", "popularity"):
        r = inc.get(name, {})
        if name in q:
            lines.append(" | ".join([f"| {name}", *(fmt(r.get(c), ".1f") for c in (
                "wall_s", "fit_s", "train_s", "startup_s")), str(r.get("steps", "-")),
                fmt(q[name][k], ".4f"), fmt(q[name]["auc_pr"], ".4f")]) + " |")
    t, r = inc["time_ratio"], inc["quality_ratio"]
    lines += ["", f"incremental/full time: wall {fmt(t['wall_s'])}, fit() {fmt(t['fit_s'])}, "
              f"loop {fmt(t['train_s'])}; quality: {k} {fmt(r[k])}, AUC-PR {fmt(r['auc_pr'])}"]
    return lines + _update_breakdown(inc)


def _update_breakdown(inc: dict[str, Any]) -> list[str]:
    """Where the timed update's wall time went, and how often the gate promoted."""
    row, priming = inc["incremental"], inc.get("priming", [])
    phases = row.get("phases") or {}
    lines = ["", f"gate tolerance {inc.get('gate_tolerance', '?')}: "
             f"{sum(bool(p.get('promoted')) for p in priming)}/{len(priming)} priming updates "
             f"promoted; the timed update {'promoted' if row.get('promoted') else 'rejected'}"]
    if phases:
        lines += ["", "| update phase | s |", "|---|---|",
                  *(f"| {name} | {fmt(sec, '.1f')} |" for name, sec in phases.items()),
                  f"| of which Ray Train start-up (in fit) | {fmt(row.get('startup_s'), '.1f')} |"]
    return lines


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Each target with its measured value (None: not measured) and whether it is met."""
    checks: dict[str, tuple[float | None, str, bool]] = {}
    for pair in ("ray_1w/plain", "ray_1w_1t/plain_1t"):
        if "throughput" in result:
            v = result["throughput"]["median_ratio"][pair]
            checks[f"{pair} steady samples/s"] = (v, ">= 0.95", v is not None and v >= 0.95)
    if "incremental" in result:
        inc = result["incremental"]
        v = inc["time_ratio"]["fit_s"]
        checks["incremental/full fit() wall"] = (v, "<= 0.15", v is not None and v <= 0.15)
        known = [q for q in inc["quality_ratio"].values() if q is not None]
        v = min(known) if known else None
        checks["incremental/full quality (worse task)"] = (v, ">= 0.98",
                                                           v is not None and v >= 0.98)
    return {name: {"value": v, "target": t, "met": met} for name, (v, t, met) in checks.items()}


def markdown(result: dict[str, Any]) -> str:
    m, load = result["machine"], (result["loadavg_start"][0], result["loadavg_end"][0])
    lines = [f"## train_throughput: {result['finished']}, {m['device_name']}, {m['cpus']} CPUs, "
             f"load {load[0]:.1f} -> {load[1]:.1f}, {result['seconds']:.0f} s"
             f"{' (--quick)' if result['config']['quick'] else ''}"
             f"{'' if result['complete'] else ' (INCOMPLETE: later parts still running)'}", ""]
    if "throughput" in result:
        lines += throughput_md(result["throughput"]) + [""]
    if "incremental" in result:
        lines += incremental_md(result["incremental"]) + [""]
    lines += ["| target | value | met |", "|---|---|---|"]
    lines += [f"| {name} {v['target']} | {fmt(v['value'])} | {'yes' if v['met'] else 'NO'} |"
              for name, v in result["verdicts"].items()]
    return "\n".join(lines) + "\n"
