"""Standalone updates with and without the store's title vectors (training.store.title_vectors).

    python benchmarks/title_cache.py --freqs month week --weeks 5 \
        --out benchmarks/recorded/title_cache

Each update is ``python -m training.incremental`` in a new process, as a job runs it: per
window, one into a store with ``--title-cache false`` and one into a store with the default,
which runs first alternating by window. Recorded per update: its own seconds and phases (the
SUMMARY line), the titles it took from the store and encoded, the wall time of the whole
process (Ray start, imports and reading the data included), and the candidate's gate scores,
which should not move (a stored vector is the one the first process computed).
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

VARIANTS = ("no_cache", "cache")
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
           "--storage-path", str(work / variant / "ray"),
           "--title-cache", "true" if variant == "cache" else "false"]
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
    with tempfile.TemporaryDirectory(prefix="title-cache-") as tmp:
        for i in range(n):
            order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            rows.extend(one_update(args, freq, Path(tmp), v) for v in order)
    return {"freq": freq, "rows": rows}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def ratios(part: dict[str, Any]) -> dict[str, Any]:
    """Cache / no cache over the updates after the first (the first has nothing stored),
    and the largest difference between the two stores' gate scores."""
    later = {v: [r for r in part["rows"] if r["variant"] == v][1:] for v in VARIANTS}
    out: dict[str, Any] = {"updates": len(later["cache"])}
    for key in ("seconds", "process_s"):
        base, new = _mean([r[key] for r in later["no_cache"]]), \
            _mean([r[key] for r in later["cache"]])
        out[key] = {"no_cache": round(base, 2), "cache": round(new, 2),
                    "ratio": round(new / base, 3) if base else None}
    pairs = zip([r for r in part["rows"] if r["variant"] == "no_cache"],
                [r for r in part["rows"] if r["variant"] == "cache"])
    out["max_score_diff"] = max((abs(a["candidate"][k] - b["candidate"][k])
                                 for a, b in pairs for k in a["candidate"]
                                 if a["candidate"][k] is not None), default=0.0)
    return out


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    command = (f"python benchmarks/title_cache.py --freqs {' '.join(a['freqs'])} "
               f"--months {a['months']} --weeks {a['weeks']} --out {a['out']}")
    lines = ["# Standalone updates with and without the store's title vectors", "",
             f"`{command}`", "",
             "Each update is `python -m training.incremental` in a new process, into a store "
             "with `--title-cache false` (no_cache) or the default (cache); the first of each "
             "pair alternates by window.", "",
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
        summary = ratios(part)
        update, process = summary["seconds"], summary["process_s"]
        lines += ["", f"Over the {summary['updates']} updates after the first: update "
                  f"{update['cache']} s with the store's vectors against "
                  f"{update['no_cache']} s without (**{update['ratio']}x**); "
                  f"the whole process {process['cache']} s against "
                  f"{process['no_cache']} s ({process['ratio']}x). "
                  f"Largest gate-score difference between the stores: "
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
    parser.add_argument("--out", default="benchmarks/recorded/title_cache")
    args = parser.parse_args(argv)
    record_parts("title_cache", args, lambda freq: measure(args, freq), args.freqs, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
