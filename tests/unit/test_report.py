"""cluster.comparison.report / cluster.comparison.plots: strict metrics.json, hand-computed
tables, honest verdicts, PNG plots and check_report on good and broken report folders."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.comparison.plots import expected_plots
from cluster.comparison.report import (
    PNG_MAGIC,
    ReportError,
    ReportPaths,
    check_report,
    mean_forgetting,
    summary_markdown,
    to_strict_json,
    write_report,
)
from cluster.comparison.tables import per_window_table, summary_table, text_table
from cluster.comparison.verdicts import time_line, verdicts

pytestmark = pytest.mark.unit

NEURAL = ("incremental", "incremental_no_replay", "full_retrain", "frozen")
# method -> (rec ndcg@20 on w1, w2), (rec recall@20 on w1, w2)
REC = {
    "incremental": ((0.10, 0.20), (0.30, 0.40)),
    "incremental_no_replay": ((0.08, 0.12), (0.20, 0.30)),
    "full_retrain": ((0.20, 0.30), (0.50, 0.60)),
    "frozen": ((0.05, 0.03), (0.10, 0.10)),
    "popularity": ((0.06, 0.04), (0.12, 0.10)),
    "repeat_then_popular": ((0.12, 0.14), (0.25, 0.35)),
}
# method -> (fraud auc_pr on w1, w2), (fraud roc_auc on w1, w2)
FRAUD = {
    "incremental": ((0.40, 0.60), (0.90, 0.92)),
    "incremental_no_replay": ((0.35, 0.45), (0.85, 0.87)),
    "full_retrain": ((0.30, 0.50), (0.80, 0.84)),
    "frozen": ((0.20, 0.10), (0.70, 0.60)),
    "hist_gradient_boosting": ((0.70, 0.60), (0.95, 0.97)),
}
# method -> wall seconds of the update on w0, w1, w2
WALL = {"incremental": (10.0, 4.0, 6.0), "incremental_no_replay": (10.0, 3.0, 5.0),
        "full_retrain": (10.0, 20.0, 30.0), "frozen": (10.0, 0.0, 0.0),
        "popularity": (0.01, 0.01, 0.01), "repeat_then_popular": (0.02, 0.02, 0.02),
        "hist_gradient_boosting": (1.0, 2.0, 3.0)}
# method -> after window -> eval window -> rec score (fraud = rec + 0.3)
FORGET = {
    "incremental": {"w0": {"w0": 0.20}, "w1": {"w0": 0.18, "w1": 0.30},
                    "w2": {"w0": 0.15, "w1": 0.28, "w2": 0.30}},
    "incremental_no_replay": {"w0": {"w0": 0.20}, "w1": {"w0": 0.10, "w1": 0.30},
                              "w2": {"w0": 0.05, "w1": 0.20, "w2": 0.30}},
}


def _methods() -> dict[str, Any]:
    out: dict[str, Any] = {m: {"label": m, "kind": "neural", "tasks": ["rec", "fraud"]}
                           for m in NEURAL}
    out["popularity"] = {"label": "pop", "kind": "baseline", "tasks": ["rec"]}
    out["repeat_then_popular"] = {"label": "rtp", "kind": "baseline", "tasks": ["rec"]}
    out["hist_gradient_boosting"] = {"label": "hgb", "kind": "baseline", "tasks": ["fraud"]}
    return out


def _prequential() -> dict[str, Any]:
    pre: dict[str, Any] = {"w1": {}, "w2": {}}
    for i, w in enumerate(("w1", "w2")):
        for m, (ndcg, recall) in REC.items():
            pre[w].setdefault(m, {})["rec"] = {"ndcg@20": ndcg[i], "recall@20": recall[i],
                                               "hitrate@20": 0.5, "n_users": 100}
        for m, (ap, auc) in FRAUD.items():
            pre[w].setdefault(m, {})["fraud"] = {"auc_pr": ap[i], "roc_auc": auc[i],
                                                 "recall@1%fpr": 0.3, "n": 500, "n_pos": 10}
    return pre


def make_result() -> dict[str, Any]:
    forgetting = {m: {a: {e: {"rec": v, "fraud": v + 0.3} for e, v in evs.items()}
                      for a, evs in tree.items()} for m, tree in FORGET.items()}
    return {
        "schema": 1, "created_at": "2026-11-22T23:59:00Z",
        "source": {"name": "synthetic", "path": None, "freq": "week"},
        "settings": {"seed": 0, "methods": "all", "incremental": {"trainer": "local"},
                     "arms_trainer": "local"},
        "windows": ["w0", "w1", "w2"], "evaluated_windows": ["w1", "w2"],
        "tasks": {"rec": "ndcg@20", "fraud": "auc_pr"},
        "methods": _methods(), "prequential": _prequential(),
        "updates": {w: {m: {"wall_s": s[i], "fit_s": s[i] / 2, "steps": 4} for m, s in WALL.items()}
                    for i, w in enumerate(("w0", "w1", "w2"))},
        "forgetting": forgetting,
        "served": {"version": "v2", "last_published": "v2",
                   "queries": [{"endpoint": "/recommend", "status": 200, "body": {}}]},
    }


def rec_only() -> dict[str, Any]:
    result = make_result()
    del result["tasks"]["fraud"]
    del result["methods"]["hist_gradient_boosting"]
    for per_method in result["prequential"].values():
        per_method.pop("hist_gradient_boosting", None)
        for tasks in per_method.values():
            tasks.pop("fraud", None)
    return result


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportPaths]:
    directory = tmp_path_factory.mktemp("good") / "report"  # write_report creates it
    return directory, write_report(make_result(), directory)


def _row(table: tuple[list[str], list[list[str]]], method: str) -> dict[str, str]:
    header, rows = table
    [row] = [r for r in rows if r[0] == method]
    return dict(zip(header, row))


# --------------------------------------------------------------------------- tables


def test_summary_table_hand_computed_means() -> None:
    table = summary_table(make_result())
    assert table[0] == ["method", "rec ndcg@20", "rec recall@20", "fraud auc_pr",
                        "fraud roc_auc", "update s/window", "update s total", "trainer"]
    assert [r[0] for r in table[1]] == list(_methods())
    assert _row(table, "incremental") == {
        "method": "incremental", "rec ndcg@20": "0.1500", "rec recall@20": "0.3500",
        "fraud auc_pr": "0.5000", "fraud roc_auc": "0.9100",
        "update s/window": "6.67", "update s total": "20.00",  # (10+4+6)/3, 10+4+6
        "trainer": "local"}
    assert _row(table, "full_retrain")["rec ndcg@20"] == "0.2500"
    assert _row(table, "full_retrain")["update s/window"] == "20.00"
    assert _row(table, "popularity") == {
        "method": "popularity", "rec ndcg@20": "0.0500", "rec recall@20": "0.1100",
        "fraud auc_pr": "n/a", "fraud roc_auc": "n/a",
        "update s/window": "0.01", "update s total": "0.03",
        "trainer": "in-process (no trainer)"}
    assert _row(table, "hist_gradient_boosting")["fraud auc_pr"] == "0.6500"
    assert _row(table, "hist_gradient_boosting")["rec ndcg@20"] == "n/a"


def test_nan_metric_is_left_out_of_the_mean_and_flagged() -> None:
    result = make_result()
    result["prequential"]["w2"]["incremental"]["rec"]["ndcg@20"] = float("nan")
    del result["updates"]["w1"]["frozen"]
    table = summary_table(result)
    assert _row(table, "incremental")["rec ndcg@20"] == "0.1000 (1/2 windows)"
    assert _row(table, "frozen")["update s/window"] == "5.00 (2/3 windows)"
    assert _row(table, "frozen")["update s total"] == "10.00"
    header, rows = per_window_table(result, "rec")
    assert header == ["window", *REC]
    assert rows[1][:2] == ["w2", "not measured"]
    assert rows[0][:4] == ["w1", "0.1000", "0.0800", "0.2000"]


def test_text_table_aligns_columns() -> None:
    assert text_table(["a", "bb"], [["ccc", "d"]]) == "a    bb\nccc  d"


def test_mean_forgetting_by_hand() -> None:
    result = make_result()
    # w0: max(0.20 after w0, 0.18 after w1) - 0.15 latest; w1: 0.30 - 0.28
    assert mean_forgetting(result, "incremental", "rec") == (pytest.approx(0.035), 2)
    # w0: 0.20 - 0.05; w1: 0.30 - 0.20
    assert mean_forgetting(result, "incremental_no_replay", "rec") == (pytest.approx(0.125), 2)
    assert mean_forgetting(result, "full_retrain", "rec")[1] == 0  # not evaluated
    result["forgetting"]["incremental"]["w2"]["w0"]["rec"] = 0.40  # later training helped w0
    assert mean_forgetting(result, "incremental", "rec")[0] == pytest.approx((-0.20 + 0.02) / 2)


# --------------------------------------------------------------------------- verdicts


def test_verdicts_say_incremental_is_worse_when_it_is() -> None:
    lines = verdicts(make_result())
    # No interval in this results dict: the means are shown, better/worse is not claimed.
    assert ("rec: incremental vs full_retrain on mean ndcg@20: 0.1500 vs 0.2500 "
            "(ratio 0.600; higher on 0/2 evaluated windows): no better/worse claim (no "
            "interval in this run)") in lines
    assert ("fraud: incremental vs full_retrain on mean auc_pr: 0.5000 vs 0.4000 "
            "(ratio 1.250; higher on 2/2 evaluated windows): no better/worse claim (no "
            "interval in this run)") in lines
    assert ("update cost: incremental is faster than full_retrain: 5.00 s vs 25.00 s mean wall "
            "time per update after the first version (2 windows, ratio 0.200; both on the local "
            "trainer; 4.0 vs 4.0 training steps); first version, fitted from scratch by both: "
            "10.00 s vs 10.00 s, the arm run first paying the process start-up") in lines
    assert any(ln.startswith("rec: incremental forgets less than incremental_no_replay: "
                             "mean drop +0.0350 vs +0.1250") for ln in lines)
    assert any(ln.startswith("rec: incremental vs repeat_then_popular on mean "
                             "ndcg@20: 0.1500 vs 0.1300") for ln in lines)
    assert any(ln.startswith("rec: incremental vs popularity on mean ndcg@20: "
                             "0.1500 vs 0.0500") for ln in lines)
    assert any(ln.startswith("fraud: incremental vs hist_gradient_boosting on mean "
                             "auc_pr: 0.5000 vs 0.6500") for ln in lines)
    assert not any(ln.endswith((": better", ": worse")) or " is better than" in ln
                   or " is worse than" in ln for ln in lines)
    assert not any("better than full_retrain on mean ndcg" in ln for ln in lines)


def test_update_cost_compares_the_updates_after_the_first_version() -> None:
    """The first window's from-scratch fit carries the process start-up of whichever arm runs
    first: it is shown apart, and the verdict follows the updates after it."""
    result = make_result()
    for window, ours, full, steps in (("w0", 30.0, 10.0, 4), ("w1", 4.0, 20.0, 6),
                                      ("w2", 6.0, 30.0, 9)):
        result["updates"][window]["incremental"].update(wall_s=ours, steps=steps)
        result["updates"][window]["full_retrain"].update(wall_s=full, steps=steps * 3)
    line = time_line(result, "incremental", "full_retrain")
    # Averaged over every window, ours would read 13.33 s vs 20.00 s; the first alone, 3x.
    assert line == ("update cost: incremental is faster than full_retrain: 5.00 s vs 25.00 s "
                    "mean wall time per update after the first version (2 windows, ratio 0.200; "
                    "both on the local trainer; 7.5 vs 22.5 training steps); first version, "
                    "fitted from scratch by both: 30.00 s vs 10.00 s, the arm run first paying "
                    "the process start-up")
    result["updates"]["w2"]["incremental"]["wall_s"] = 60.0
    assert time_line(result, "incremental", "full_retrain").startswith(
        "update cost: incremental is slower than full_retrain: 32.00 s vs 25.00 s")
    for window in ("w1", "w2"):
        del result["updates"][window]["full_retrain"]
    assert time_line(result, "incremental", "full_retrain") == (
        "update cost: incremental vs full_retrain: not measured (no update after the first "
        "version timed for both); first version, fitted from scratch by both: 30.00 s vs "
        "10.00 s, the arm run first paying the process start-up")


def test_verdicts_say_not_measured_for_missing_task_and_method() -> None:
    result = rec_only()
    del result["methods"]["full_retrain"]
    lines = verdicts(result)
    assert "fraud: not measured (no fraud task in this data)" in lines
    assert ("rec: incremental vs full_retrain: not measured (full_retrain was not run on rec)"
            in lines)
    assert "update cost: incremental vs full_retrain: not measured (method not run)" in lines
    assert sum("not measured" in ln for ln in lines) == 5  # 2 full_retrain, 3 fraud


# --------------------------------------------------------------------------- files


def test_write_report_files_and_strict_json(good: tuple[Path, ReportPaths]) -> None:
    directory, paths = good
    assert paths.metrics_json == directory / "metrics.json"
    assert paths.summary_md == directory / "summary.md"
    assert sorted(p.name for p in paths.plots) == sorted(
        ["rec_per_window.png", "fraud_per_window.png", "update_seconds.png", "forgetting.png"])
    for png in paths.plots:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1024
    assert json.loads(paths.metrics_json.read_text()) == make_result()
    assert check_report(directory) == []


def test_summary_md_contents(good: tuple[Path, ReportPaths]) -> None:
    text = good[1].summary_md.read_text()
    assert text.startswith("# ShopStream report: synthetic, week windows w0 .. w2 (3 windows, "
                           "2 evaluated)")
    assert "2026-11-22T23:59:00Z" in text
    assert "| incremental | 0.1500 | 0.3500 | 0.5000 | 0.9100 | 6.67 | 20.00 | local |" in text
    assert "| w2 | 0.2000 | 0.1200 | 0.3000 | 0.0300 | 0.0400 | 0.1400 |" in text  # rec table
    assert "| w0 | 0.2000 | 0.1500 | +0.0500 | 0.5000 | 0.4500 | +0.0500 |" in text  # forgetting
    assert ("- Served version: `v2`; last published: `v2`.\n"
            "- Smoke queries: /recommend -> 200.") in text
    assert "- rec: incremental vs full_retrain on mean ndcg@20: 0.1500 vs 0.2500" in text
    assert "every neural arm ran with trainer `local` (comparable; incremental: local" in text
    assert "![forgetting.png](forgetting.png)" in text


def test_nan_becomes_null_and_report_names_method_and_window(tmp_path: Path) -> None:
    result = make_result()
    result["prequential"]["w2"]["popularity"]["rec"]["ndcg@20"] = float("nan")
    result["updates"]["w0"]["frozen"]["wall_s"] = np.float32(2.5)
    result["served"]["queries"][0]["body"] = {"scores": np.array([0.5, np.inf])}
    write_report(result, tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["prequential"]["w2"]["popularity"]["rec"]["ndcg@20"] is None
    assert loaded["updates"]["w0"]["frozen"]["wall_s"] == 2.5
    assert loaded["served"]["queries"][0]["body"] == {"scores": [0.5, None]}
    assert check_report(tmp_path) == [
        "popularity: evaluated window w2 has ndcg@20 = None, not a finite number"]


def test_check_report_names_missing_entries_and_plots(tmp_path: Path) -> None:
    result = make_result()
    del result["prequential"]["w1"]["hist_gradient_boosting"]
    del result["prequential"]["w1"]["incremental"]["fraud"]["auc_pr"]
    result["prequential"]["w2"]["frozen"]["rec"]["ndcg@20"] = "0.3"
    write_report(result, tmp_path)
    (tmp_path / "update_seconds.png").unlink()
    (tmp_path / "forgetting.png").write_bytes(b"")
    assert check_report(tmp_path) == [
        "incremental: evaluated window w1 has no auc_pr",
        "hist_gradient_boosting: evaluated window w1 has no fraud metrics",
        "frozen: evaluated window w2 has ndcg@20 = '0.3', not a finite number",
        "plot update_seconds.png: missing or empty",
        "plot forgetting.png: missing or empty",
    ]


def test_check_report_rejects_non_strict_json_and_missing_file(tmp_path: Path) -> None:
    assert check_report(tmp_path) == [f"{tmp_path / 'metrics.json'}: missing"]
    (tmp_path / "metrics.json").write_text(json.dumps({"x": math.nan}))
    [problem] = check_report(tmp_path)
    assert "non-finite constant NaN" in problem


def test_window_without_fraud_is_not_a_problem(tmp_path: Path) -> None:
    result = make_result()
    for per_method in result["prequential"]["w1"].values():
        if "fraud" in per_method:
            per_method["fraud"].update(auc_pr=None, roc_auc=None, n_pos=0)
    write_report(result, tmp_path)
    assert check_report(tmp_path) == []
    assert _row(summary_table(result), "incremental")["fraud auc_pr"] == "0.6000 (1/2 windows)"


def test_rec_only_report(tmp_path: Path) -> None:
    result = rec_only()
    assert expected_plots(result) == ["rec_per_window.png", "update_seconds.png",
                                      "forgetting.png"]
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths.plots] == expected_plots(result)
    assert not (tmp_path / "fraud_per_window.png").exists()
    assert summary_table(result)[0] == ["method", "rec ndcg@20", "rec recall@20",
                                        "update s/window", "update s total", "trainer"]
    assert check_report(tmp_path) == []
    assert "fraud: not measured (no fraud task in this data)" in paths.summary_md.read_text()


def test_served_version_mismatch_is_reported() -> None:
    result = make_result()
    result["served"].update(version=None, deployments={"rec": "v1", "fraud": "v2"},
                            url="http://127.0.0.1:8000")
    text = summary_markdown(result, [])
    assert ("- Served version: no single version ({'rec': 'v1', 'fraud': 'v2'}); last "
            "published: `v2`.\n- The served version is NOT the last published one.\n"
            "- URL: http://127.0.0.1:8000\n") in text


def test_no_forgetting_and_no_served(tmp_path: Path) -> None:
    result = make_result()
    del result["forgetting"], result["served"]
    paths = write_report(result, tmp_path)
    assert "forgetting.png" not in [p.name for p in paths.plots]
    text = paths.summary_md.read_text()
    assert "Served version: not measured (no serving step in this run)." in text
    assert "### incremental\n\nnot measured." in text
    assert check_report(tmp_path) == []


def test_bad_results_dict_is_refused(tmp_path: Path) -> None:
    bad = copy.deepcopy(make_result())
    bad["evaluated_windows"] = ["w1", "w9"]
    with pytest.raises(ReportError, match=r"evaluated_windows: \['w9'\]"):
        write_report(bad, tmp_path)
    with pytest.raises(ReportError, match="schema: expected 1"):
        summary_table({**make_result(), "schema": 2})
    with pytest.raises(ReportError, match=r"result\['settings'\]\['when'\]: object"):
        to_strict_json({"settings": {"when": object()}})
    assert not (tmp_path / "metrics.json").exists()
