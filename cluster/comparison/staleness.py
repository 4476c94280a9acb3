"""How stale the live model was when each window was scored, from the pipeline's results.

Window ``t`` is scored (prequentially) by the live model after the update on window ``t-1``;
that model has been trained on data up to its ``live_window``. ``stale_windows`` counts the
windows between: 0 when the live model had seen the window just before ``t``, ``n`` when
the last ``n`` windows before ``t`` were missing from it (rejected updates, ``hold``).

Reads ``result["updates"][window]["incremental"]`` rows (see ``cluster.comparison.arms``:
``kind``, ``promoted``, ``live_window``, ...). Rows written before those fields existed
are handled too: the live window then follows the ``promoted`` flags.
"""

from __future__ import annotations

from typing import Any

from cluster.comparison.arms import OURS
from training.update.head import FALLBACK, INCREMENTAL


def _outcome(row: dict[str, Any]) -> str:
    verdict = "promoted" if row.get("promoted") else "rejected"
    return f"fallback {verdict}" if row.get("kind") == FALLBACK else verdict


def staleness_rows(result: dict[str, Any], method: str = OURS) -> list[dict[str, Any]]:
    """One row per window of ``method``'s updates, oldest first (see the module docstring
    for the fields)."""
    windows: list[str] = list(result.get("windows", []))
    pos = {wid: i for i, wid in enumerate(windows)}
    updates = result.get("updates", {})
    rows: list[dict[str, Any]] = []
    live: str | None = None  # the live model's newest window after the previous update
    for t, wid in enumerate(windows):
        scored_by = live if t > 0 else None
        stale = None if scored_by is None or scored_by not in pos else t - pos[scored_by] - 1
        update = updates.get(wid, {}).get(method)
        row: dict[str, Any] = {"window": wid, "scored_with_live_window": scored_by,
                               "stale_windows": stale, "update": None, "kind": None,
                               "promoted": None, "start_from": None,
                               "consecutive_rejections": None, "live_window_after": live}
        if update is not None:
            if "live_window" in update:
                live = update["live_window"]
            elif update.get("promoted"):
                live = wid
            start = update.get("start_from")
            row.update(update=_outcome(update), kind=update.get("kind", INCREMENTAL),
                       promoted=bool(update.get("promoted")),
                       start_from=start.get("kind") if isinstance(start, dict) else start,
                       consecutive_rejections=update.get("consecutive_rejections"),
                       live_window_after=live)
        rows.append(row)
    return rows


def staleness_totals(result: dict[str, Any], method: str = OURS) -> dict[str, Any]:
    """Counts over the updated windows, and the worst staleness over the scored ones."""
    rows = staleness_rows(result, method)
    updated = [r for r in rows if r["update"] is not None]
    incremental_promoted = sum(1 for r in updated if r["kind"] != FALLBACK and r["promoted"])
    stale = [r["stale_windows"] for r in rows if r["stale_windows"] is not None]
    return {"updates": len(updated),
            "rejections": sum(1 for r in updated if not r["promoted"]),
            "fallbacks": sum(1 for r in updated if r["kind"] == FALLBACK),
            "fallbacks_promoted": sum(1 for r in updated
                                      if r["kind"] == FALLBACK and r["promoted"]),
            "incremental_promoted": incremental_promoted,
            "incremental_promoted_fraction": incremental_promoted / len(updated)
            if updated else None,
            "max_stale_windows": max(stale) if stale else None,
            "windows_scored_stale": sum(1 for s in stale if s > 0)}


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def staleness_markdown(result: dict[str, Any]) -> list[str]:
    """A table of :func:`staleness_rows` and a line of :func:`staleness_totals`."""
    lines = ["| window | live model trained through (when scored) | windows stale | update "
             "| resumed from | rejections in a row |",
             "|---|---|---|---|---|---|"]
    for row in staleness_rows(result):
        lines.append(f"| {row['window']} | {_cell(row['scored_with_live_window'])} "
                     f"| {_cell(row['stale_windows'])} | {_cell(row['update'])} "
                     f"| {_cell(row['start_from'])} | {_cell(row['consecutive_rejections'])} |")
    totals = staleness_totals(result)
    fraction = totals["incremental_promoted_fraction"]
    share = "–" if fraction is None else f"{fraction:.0%}"
    worst = _cell(totals["max_stale_windows"])
    lines += ["", f"{totals['updates']} updates: {totals['rejections']} rejected, "
              f"{totals['fallbacks']} fallback retrain(s) ({totals['fallbacks_promoted']} "
              f"promoted); the incremental candidate itself was promoted on "
              f"{totals['incremental_promoted']} ({share}); the live model was stale on "
              f"{totals['windows_scored_stale']} scored window(s), at most {worst} "
              f"window(s) behind."]
    return lines


def gate_line(result: dict[str, Any], method: str) -> list[str]:
    """One line on how the gate treated a comparison arm's updates (none unless every update
    row of it records the gate's verdict: runs recorded before the arm was gated did not):
    the arms' tolerance is the pipeline's ``arms_gate_tolerance`` (1.0 before the setting
    existed)."""
    rows = [u[method] for u in (result.get("updates") or {}).values() if method in u]
    if not rows or any("promoted" not in row for row in rows):
        return []
    totals = staleness_totals(result, method)
    pipeline = (result.get("settings") or {}).get("pipeline") or {}
    tolerance = float(pipeline.get("arms_gate_tolerance", 1.0))
    note = " (passes every candidate: the arm is measured on its newest model every window " \
        "and never served)" if tolerance >= 1.0 else ""
    worst = _cell(totals["max_stale_windows"])
    return [f"`{method}` publishes through the gate at tolerance {tolerance:g} "
            f"(--arms-gate-tolerance){note}: {totals['updates']} updates, "
            f"{totals['rejections']} rejected; its live model was at most {worst} window(s) "
            "behind.", ""]
