"""The redeploy test, again and again, beside a CPU burner: does a redeploy drop a request
on a loaded machine?

    python benchmarks/redeploy_soak.py --runs 10 --burners 2

Starts ``--burners`` processes that spin on the CPU (a machine whose cores are all busy
with something else), then runs ``--test`` (default :data:`TEST`, the default topology's
redeploy under a client loop) ``--runs`` times in a row, each in a fresh pytest process (a
fresh Ray and Serve). Printed and written to
``benchmarks/results/redeploy_soak.{json,md}``: pass/fail and seconds per run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from training.cli import LOCAL_RAY_ENV

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
# The default topology's redeploy (fused, two replicas); --test picks another, e.g. the
# split topology's: tests/integration/test_serve.py::test_a_redeploy_keeps_serving_and_...
TEST = ("tests/integration/test_serve_faults.py::"
        "test_a_redeploy_keeps_serving_and_applies_user_config")


def burn(stop_after_s: float) -> None:
    """Spin on one core (bounded in time, so a crashed driver leaves nothing behind)."""
    deadline = time.monotonic() + stop_after_s
    n = 0
    while time.monotonic() < deadline:
        n += 1


def run_once(test: str, timeout_s: float) -> dict[str, object]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    lines = done.stdout.strip().splitlines()
    result: dict[str, object] = {"passed": done.returncode == 0,
                                 "seconds": round(time.monotonic() - began, 1),
                                 "summary": (lines[-1:] or [""])[0]}
    if done.returncode != 0:  # keep why, for the JSON (the table shows the summary line)
        result["errors"] = [line for line in lines if line.startswith(("E ", "ERROR", "FAILED"))
                            ][-30:]
    return result


def write(runs: list[dict[str, object]], args: argparse.Namespace) -> None:
    passed = sum(bool(r["passed"]) for r in runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = {"runs": args.runs, "burners": args.burners, "cpus": os.cpu_count(),
                "test": args.test}
    (RESULTS / "redeploy_soak.json").write_text(json.dumps(
        {"settings": settings, "passed": passed, "runs": runs}, indent=2))
    lines = [f"# Redeploy soak: {passed} of {len(runs)} passed ({args.runs} planned)",
             "", f"{args.burners} CPU-spinning processes beside the test on "
             f"{os.cpu_count()} cores; each run a fresh pytest process (`{args.test}`).", "",
             "| run | passed | seconds | pytest |", "|---|---|---|---|"]
    lines += [f"| {i + 1} | {r['passed']} | {r['seconds']} | {r['summary']} |"
              for i, r in enumerate(runs)]
    (RESULTS / "redeploy_soak.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burners", type=int, default=2, help="CPU-spinning processes")
    parser.add_argument("--run-timeout-s", type=float, default=600.0)
    parser.add_argument("--test", default=TEST, help="the pytest node id to run")
    args = parser.parse_args(argv)
    os.environ.update(LOCAL_RAY_ENV)
    budget = args.runs * args.run_timeout_s
    burners = [multiprocessing.Process(target=burn, args=(budget,), daemon=True)
               for _ in range(args.burners)]
    for proc in burners:
        proc.start()
    runs: list[dict[str, object]] = []
    try:
        for n in range(args.runs):
            runs.append(run_once(args.test, args.run_timeout_s))
            print(f"run {n + 1}/{args.runs}: {runs[-1]}", flush=True)
            write(runs, args)  # after every run: a stopped soak keeps what it measured
    finally:
        for proc in burners:
            proc.terminate()
    passed = sum(bool(r["passed"]) for r in runs)
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
