"""What a standalone update costs: each ``python -m training.incremental`` in a new process.

    python benchmarks/standalone_update.py --freqs month week --weeks 5 \
        --out benchmarks/recorded/standalone_update

Per window, one update into each variant's own store, the order rotating by window:
``no_cache`` (``--title-cache false``: every title encoded again), ``cache`` (the default:
the store's title vectors, training.store.title_vectors; no Ray started for an update that
trains in-process, training.fit.ray_session) and ``eager_ray`` (the default with
``--ray-address local``: a local Ray started at once, as every run did before) and ``before``
(both: what an update cost before either). Recorded per
update: its own seconds and phases (the SUMMARY line), the titles it took from the store and
encoded, the wall time of the whole process (imports, Ray, reading the data included), and
the candidate's gate scores, which should not move between the variants.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import repo_path  # noqa: F401  (the repository root on sys.path)
from recording import record_parts

VARIANTS: dict[str, list[str]] = {"no_cache": ["--title-cache", "false"], "cache": [],
                                  "eager_ray": ["--ray-address", "local"],
                                  "before": ["--title-cache", "false", "--ray-address", "local"]}
SUMMARY = re.compile(r"^SUMMARY .*?window=(?P<window>\S+) .*?candidate=(?P<candidate>\{.*?\}) "
                     r".*seconds=(?P<seconds>\S+) phases=(?P<phases>\{.*?\}) "
                     r"titles=(?P<titles>\{.*?\}|None)$", re.M)


def parse_summary(stdout: str) -> dict[str, Any]:
    """The SUMMARY line's window, candidate scores, seconds, phases and titles."""
    match = SUMMARY.search(stdout)
    if match is None:
        raise RuntimeError(f"no SUMMARY line in:\n{stdout[-2000:]}")
    literal = {k: ast.literal_eval(re.sub(r"\bnan\b", "None", match.group(k)))
               for k in ("candidate", "phases", "titles")}
    return {"window": match.group("window"), "seconds": float(match.group("seconds")),
            **literal}


def one_update(args: argparse.Namespace, freq: str, work: Path, variant: str
               ) -> dict[str, Any]:
    """One ``training.incremental`` process on the next window of ``variant``'s store."""
    cmd = [sys.executable, "-m", "training.incremental", "--source", args.source,
           "--path", args.path, "--freq", freq, "--store", str(work / variant / "store"),
           "--storage-path", str(work / variant / "ray"), *VARIANTS[variant]]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: rc {done.returncode}\n{done.stderr[-3000:]}")
    row = parse_summary(done.stdout)
    print(f"{freq} {row['window']} {variant}: {row['seconds']} s update, {wall:.1f} s process, "
          f"titles {row['titles']}", flush=True)
    return {"variant": variant, "process_s": round(wall, 2), **row}


def measure(args: argparse.Namespace, freq: str) -> dict[str, Any]:
    n = args.months if freq == "month" else args.weeks
    rows: list[dict[str, Any]] = []
    names = list(args.variants)
    with tempfile.TemporaryDirectory(prefix="standalone-update-") as tmp:
        for i in range(n):
            order = names[i % len(names):] + names[:i % len(names)]
            rows.extend(one_update(args, freq, Path(tmp), v) for v in order)
    return {"freq": freq, "rows": rows}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def means(part: dict[str, Any]) -> dict[str, Any]:
    """Per variant, mean update and process seconds over the updates after the first (the
    first has nothing stored yet); and the largest gate-score difference between variants."""
    rows = part["rows"]
    names = list(dict.fromkeys(r["variant"] for r in rows))
    later = {v: [r for r in rows if r["variant"] == v][1:] for v in names}
    out: dict[str, Any] = {"updates": min(len(x) for x in later.values())}
    for key in ("seconds", "process_s"):
        out[key] = {v: round(_mean([r[key] for r in later[v]]), 2) for v in names}
    by_window: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_window.setdefault(r["window"], []).append(r["candidate"])
    out["max_score_diff"] = max((abs(a[k] - b[k]) for group in by_window.values()
                                 for a in group for b in group for k in a
                                 if a[k] is not None and b.get(k) is not None), default=0.0)
    return out


def _ratio(new: float, base: float) -> str:
    return f"{new / base:.3f}x" if base else "-"


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    command = (f"python benchmarks/standalone_update.py --freqs {' '.join(a['freqs'])} "
               f"--months {a['months']} --weeks {a['weeks']} "
               f"--variants {' '.join(a['variants'])} --out {a['out']}")
    lines = ["# Standalone updates: each `python -m training.incremental` in a new process", "",
             f"`{command}`", "",
             "Variants (each its own store; the order rotates by window): " + "; ".join(
                 f"`{v}` {' '.join(VARIANTS[v]) or '(the defaults)'}" for v in a["variants"]),
             "",
             f"Finished {result['finished']}; {result['cpus']} CPUs, torch {result['torch']}; "
             f"load average {result['loadavg_start'][0]:.2f} at the start, "
             f"{result['loadavg_end'][0]:.2f} at the end.", ""]
    for part in result["parts"]:
        lines += [f"## {args_source(result)}, `--freq {part['freq']}`", "",
                  "| window | variant | update s | prepare s | fit s | titles from store | "
                  "titles encoded | process s | gate rec |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in part["rows"]:
            titles = r["titles"] or {}
            lines.append(f"| {r['window']} | {r['variant']} | {r['seconds']:.1f} | "
                         f"{r['phases'].get('prepare', 0):.2f} | {r['phases'].get('fit', 0):.2f} | "
                         f"{titles.get('from_store', '-')} | {titles.get('encoded', '-')} | "
                         f"{r['process_s']:.1f} | {r['candidate'].get('rec')} |")
        summary = means(part)
        update, process = summary["seconds"], summary["process_s"]
        lines += ["", f"Over the {summary['updates']} updates after the first, mean update s "
                  f"{update} and process s {process}."]
        if "no_cache" in update and "cache" in update:
            lines.append(f"Title vectors from the store: update {update['cache']} s against "
                         f"{update['no_cache']} s (**{_ratio(update['cache'], update['no_cache'])}"
                         f"**), process {_ratio(process['cache'], process['no_cache'])}.")
        if "eager_ray" in process and "cache" in process:
            lines.append(f"No Ray started for an in-process update: process "
                         f"{process['cache']} s against {process['eager_ray']} s "
                         f"(**{_ratio(process['cache'], process['eager_ray'])}**).")
        if "before" in process and "cache" in process:
            lines.append(f"Both, against the code before them: process {process['cache']} s "
                         f"against {process['before']} s "
                         f"(**{_ratio(process['cache'], process['before'])}**).")
        lines += [f"Largest gate-score difference between the variants: "
                  f"{summary['max_score_diff']:.2g}.", ""]
    return "\n".join(lines)


def args_source(result: dict[str, Any]) -> str:
    return f"`{result['args']['source']}` ({result['args']['path']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="online_retail")
    parser.add_argument("--path", default="../shared/data/online_retail")
    parser.add_argument("--freqs", nargs="+", default=["month", "week"])
    parser.add_argument("--months", type=int, default=3, help="month windows to update on")
    parser.add_argument("--weeks", type=int, default=5, help="week windows to update on")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default="benchmarks/recorded/standalone_update")
    args = parser.parse_args(argv)
    record_parts("standalone_update", args, lambda freq: measure(args, freq), args.freqs, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
