"""`make demo` on the embedded default prints next-window metrics for both tasks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_make_demo_prints_both_tasks_and_baselines(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["make", "-s", "demo", f"DEMO_ARGS=--source synthetic --epochs 3 --metrics-out {out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("recommendation (next window, k=20):", "popularity", "repeat_then_popular",
                 "fraud (next window): auc_pr="):
        assert line in proc.stdout
    result = json.loads(out.read_text())
    model = result["recommendation"]["model"]
    assert model["all/n_users"] > 500
    assert 0 < model["all/recall@20"] <= 1
    # The trained model beats popularity on this shop's warm users...
    assert model["warm/recall@20"] > result["recommendation"]["popularity"]["warm/recall@20"]
    # ...and separates fraud far better than chance.
    assert result["fraud"]["n_pos"] > 10
    assert result["fraud"]["roc_auc"] > 0.75
