"""Did a change move any number of the report? Two ``metrics.json`` of the same run, compared.

    python benchmarks/metrics_diff.py BEFORE/metrics.json AFTER/metrics.json [--md-out F]

For a refactor that must leave behaviour alone (#12: "the report's numbers are identical"):
every leaf of the two reports is paired by its path. What a rerun changes by nature —
wall times and phase seconds, version ids and their timestamps, output paths — is counted
apart as *volatile*; every other difference is listed with both values and its relative
size. Exit status 0 when nothing but volatile leaves differ (float32 scores within
``--rel-tol`` count as equal), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Keys whose values a rerun changes without any change of behaviour.
VOLATILE = {"wall_s", "loop_s", "fit_s", "seconds", "phases", "created_at", "version",
            "live_version", "parent", "model_version", "last_published", "work_dir",
            "report_dir", "storage_path", "store", "path", "Recommender", "FraudScorer",
            "update_seconds", "startup_s", "replica_ids"}


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from leaves(value[key], f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def volatile(path: str) -> bool:
    return any(part.split("[")[0] in VOLATILE for part in path.split("/"))


def relative(a: Any, b: Any) -> float:
    if isinstance(a, bool) or isinstance(b, bool):
        return math.inf
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(a - b) / max(abs(a), abs(b), 1e-12)
    return math.inf


def compare(before: dict[str, Any], after: dict[str, Any], rel_tol: float) -> dict[str, Any]:
    a, b = dict(leaves(before)), dict(leaves(after))
    rows, moved, near = [], 0, 0
    for path in sorted(set(a) | set(b)):
        if a.get(path) == b.get(path) and path in a and path in b:
            continue
        if volatile(path):
            moved += 1
            continue
        rel = relative(a.get(path), b.get(path))
        if rel <= rel_tol:
            near += 1
            continue
        rows.append({"path": path, "before": a.get(path), "after": b.get(path), "rel": rel})
    return {"leaves": len(set(a) | set(b)), "identical": len(set(a) | set(b)) - moved - near
            - len(rows), "volatile": moved, "within_tol": near, "different": rows}


def markdown(result: dict[str, Any], before: str, after: str, rel_tol: float) -> str:
    lines = [f"`{before}` vs `{after}`: {result['leaves']} leaves; {result['identical']} "
             f"identical, {result['volatile']} volatile (times, version ids, paths), "
             f"{result['within_tol']} within a relative {rel_tol:g} (float32 rounding), "
             f"**{len(result['different'])} different**", ""]
    if result["different"]:
        lines += ["| path | before | after | relative |", "|---|---|---|---|"]
        lines += [f"| `{r['path']}` | {r['before']} | {r['after']} | {r['rel']:.3g} |"
                  for r in result["different"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rel-tol", type=float, default=1e-6,
                        help="relative difference below which two numbers count as equal")
    parser.add_argument("--md-out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()),
                     args.rel_tol)
    text = markdown(result, str(args.before), str(args.after), args.rel_tol)
    print(text)
    if args.md_out:
        args.md_out.write_text(text)
    return 0 if not result["different"] else 1


if __name__ == "__main__":
    sys.exit(main())
