"""`make demo` end to end with tiny sizes and --once: real local Ray, the default trainer
(auto: these windows are too small to repay Ray Train's start-up, so every update runs
in-process and the report says so), the real MiniLM, a local store, Ray Serve over real
HTTP, the report."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from cluster.comparison.report import check_report
from tests.support.ports import free_port
from training.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY_SHOP = ("--synth-n-windows 2 --synth-interactions-per-window 1200 "
             "--synth-transactions-per-window 600 --synth-n-users 300 --synth-n-items 150 "
             "--synth-fraud-rate 0.06")


def test_make_demo_once_writes_the_report_and_serves_the_last_version(tmp_path: Path) -> None:
    port = free_port()
    store, report = tmp_path / "store", tmp_path / "report"
    args = (f"--once --port {port} --ray-address local --num-workers 2 "
            f"--store {store} --report-dir {report} --work-dir {tmp_path / 'work'} "
            f"--storage-path {tmp_path / 'ray'}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["make", "-s", "demo", f"DEMO_SHOP={TINY_SHOP}", f"DEMO_ARGS={args}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    assert check_report(report) == []
    result = json.loads((report / "metrics.json").read_text())
    windows = result["windows"]
    # Two windows: one evaluated, and every arm updated on both (a third only adds time).
    assert len(windows) == 2 and result["evaluated_windows"] == windows[1:]
    assert set(result["tasks"]) == {"rec", "fraud"}
    assert list(result["methods"]) == ["incremental", "incremental_no_replay", "full_retrain",
                                       "frozen", "popularity", "repeat_then_popular",
                                       "hist_gradient_boosting"]
    for window in result["evaluated_windows"]:
        for method, info in result["methods"].items():
            for task in info["tasks"]:
                value = result["prequential"][window][method][task][result["tasks"][task]]
                assert value is not None and math.isfinite(value), (window, method, task)
    for method in ("incremental", "incremental_no_replay", "full_retrain"):
        assert all(result["updates"][w][method]["steps"] > 0 for w in windows), method
        assert all(result["updates"][w][method]["trainer"] == "local" for w in windows)
    assert f"auto (local x{len(windows)})" in (report / "summary.md").read_text()
    # Every version is re-scored on every earlier window.
    assert sorted(result["forgetting"]["incremental"][windows[-1]]) == windows
    for png in ("rec_per_window.png", "fraud_per_window.png", "update_seconds.png",
                "forgetting.png"):
        assert (report / png).stat().st_size > 1000, png

    latest = open_store(str(store)).latest()
    assert latest is not None
    served = result["served"]
    assert served["version"] == served["last_published"] == latest.version
    assert {q["endpoint"]: q["status"] for q in served["queries"]} == {"/recommend": 200,
                                                                       "/fraud": 200}
    for answer in served["queries"]:
        assert answer["body"]["model_version"] == latest.version
    assert f"report: {report / 'summary.md'}" in proc.stdout
    assert f"curl -s -X POST http://127.0.0.1:{port}/recommend" in proc.stdout
    assert f"curl -s -X POST http://127.0.0.1:{port}/fraud" in proc.stdout
    summary = (report / "summary.md").read_text()
    assert latest.version in summary
