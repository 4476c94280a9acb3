"""benchmarks/forgetting.py drives the main job and reads its figures from the run's own
report: the same forgetting numbers the report states, set side by side over variants and
seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.comparison.report_data import mean_forgetting
from tests.support.scripts import load_script

pytestmark = pytest.mark.unit

RECORDED = Path(__file__).resolve().parents[2] / "reports" / "synthetic" / "shop-week-delay0"


def test_a_runs_row_is_its_reports_forgetting_and_prequential_mean() -> None:
    bench = load_script("forgetting")
    result = json.loads((RECORDED / "metrics.json").read_text())
    row = bench.run_row("replay+distill", 0, result)
    for task in ("rec", "fraud"):
        assert (row[f"{task}_forgetting"], row[f"{task}_windows"]) == \
            mean_forgetting(result, "incremental", task)
    scored = [result["prequential"][w]["incremental"]["rec"]["ndcg@20"]
              for w in result["evaluated_windows"]]
    assert row["rec_prequential"] == pytest.approx(sum(scored) / len(scored))


def test_seeds_aggregate_to_a_mean_and_a_range() -> None:
    bench = load_script("forgetting")
    rows = [{"variant": "none", "seed": s, "rec_forgetting": f, "rec_prequential": p,
             "rec_metric": "ndcg@20", "rec_windows": 3}
            for s, f, p in ((0, 0.02, 0.30), (1, 0.04, 0.20))]
    (entry,) = bench.aggregate(rows, ["none", "replay"])
    assert entry["forgetting"] == pytest.approx(0.03)
    assert entry["forgetting_range"] == pytest.approx([0.02, 0.04])
    assert entry["prequential"] == pytest.approx(0.25) and entry["seeds"] == 2
    assert "| rec (ndcg@20) | none | +0.0300 [+0.0200, +0.0400] |" in bench.markdown([entry])


def test_each_variant_is_one_pipeline_run_with_its_settings(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    bench = load_script("forgetting")
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> None:
        calls.append(cmd)
        report = Path(cmd[cmd.index("--report-dir") + 1])
        report.mkdir(parents=True)
        (report / "metrics.json").write_text("{}")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench.run("distill", 3, tmp_path, rerun=False) == {}
    bench.run("distill", 3, tmp_path, rerun=False)  # reused: no second run
    (cmd,) = calls
    assert cmd[1:3] == ["-m", "cluster.pipeline"]
    assert cmd[cmd.index("--replay-ratio") + 1] == "0" and "--distill-weight" not in cmd
    assert cmd[cmd.index("--synth-seed") + 1] == cmd[cmd.index("--seed") + 1] == "3"
    assert cmd[cmd.index("--methods") + 1] == "incremental"
