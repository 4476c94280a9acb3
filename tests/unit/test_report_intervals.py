"""Intervals in the pipeline report: cluster.intervals (computed when a window is evaluated),
the rec tables and verdict lines that read them, and the trainer of each arm's update."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from cluster.evaluation import RecRow
from cluster.intervals import N_BOOT, rec_pairs, record_rec_intervals
from cluster.report import (
    paired_table,
    rec_table,
    summary_markdown,
    summary_table,
    trainer_cell,
)
from cluster.verdicts import compare_line, time_line
from training.bootstrap import bootstrap_ci, paired_bootstrap_diff
from training.metrics import PerUserRanking

pytestmark = pytest.mark.unit

METHODS = {"incremental": "neural", "full_retrain": "neural", "popularity": "baseline"}


def _result() -> dict[str, Any]:
    return {
        "schema": 1, "windows": ["w0", "w1", "w2"], "evaluated_windows": ["w1", "w2"],
        "tasks": {"rec": "ndcg@2"},
        "methods": {m: {"label": m, "kind": k, "tasks": ["rec"]} for m, k in METHODS.items()},
        "prequential": {}, "updates": {"w1": {"incremental": {"wall_s": 2.0},
                                              "full_retrain": {"wall_s": 8.0}}},
        "settings": {"incremental": {"trainer": "ray"}, "arms_trainer": "local"},
    }


class FakeStore:
    def __init__(self) -> None:
        self.configs: dict[str, dict[str, Any]] = {}

    def put_config(self, name: str, data: dict[str, Any]) -> None:
        self.configs[name] = data

    def get_config(self, name: str) -> dict[str, Any] | None:
        return self.configs.get(name)


def _row(warm: list[float], cold: list[float]) -> dict[str, Any]:
    """A rec row for users 0..len(warm)-1 warm and the next ones cold."""
    users = np.arange(len(warm))
    per = {"warm": PerUserRanking(2, users, np.zeros(len(warm)), np.asarray(warm),
                                  np.zeros(len(warm)), len(warm)),
           "all": PerUserRanking(2, np.arange(len(warm) + len(cold)), np.zeros(0),
                                 np.asarray(warm + cold), np.zeros(0), len(warm) + len(cold))}
    row = RecRow({"ndcg@2": float(np.mean(warm + cold)), "warm/ndcg@2": float(np.mean(warm)),
                  "warm/n_users": float(len(warm)), "n_users": float(len(warm + cold)),
                  "cold/ndcg@2": float(np.mean(cold)), "cold/n_users": float(len(cold))})
    row.per_user = per
    return {"rec": row}


W1 = {"incremental": ([0.5, 0.6, 0.7, 0.4], [0.1]), "full_retrain": ([0.4, 0.5, 0.6, 0.3], [0.2]),
      "popularity": ([0.5, 0.6, 0.7, 0.4], [0.3])}
W2 = {"incremental": ([0.2, 0.9, 0.1], [0.0]), "full_retrain": ([0.1, 0.8, 0.05], [0.0]),
      "popularity": ([0.9, 0.1, 0.3], [0.5])}


@pytest.fixture(scope="module")
def recorded() -> tuple[dict[str, Any], FakeStore, dict[str, Any]]:
    result, store = _result(), FakeStore()
    for wid, data in (("w1", W1), ("w2", W2)):
        out = {m: _row(*v) for m, v in data.items()}
        record_rec_intervals(result, store, wid, out, 2)
        result["prequential"][wid] = out
    return result, store, out


def test_pairs_are_ours_vs_neural_and_neural_vs_baselines() -> None:
    assert rec_pairs(_result()["methods"]) == [
        ("incremental", "full_retrain"), ("incremental", "popularity"),
        ("full_retrain", "popularity")]


def test_rows_keep_point_metrics_and_gain_window_intervals(recorded) -> None:
    result, store, out = recorded
    row = result["prequential"]["w2"]["incremental"]["rec"]
    assert type(row) is dict and row["warm/ndcg@2"] == pytest.approx(0.4)
    warm = np.asarray(W2["incremental"][0])
    assert row["ci95"]["warm/ndcg@2"] == list(bootstrap_ci(warm, N_BOOT))
    assert row["ci95"]["ndcg@2"] == list(bootstrap_ci(np.asarray([0.2, 0.9, 0.1, 0.0])))
    # Per-user values go to the store, not into the results.
    assert sorted(store.configs) == ["pipeline-per-user/w1", "pipeline-per-user/w2"]
    assert store.configs["pipeline-per-user/w2"]["methods"]["popularity"]["warm"] == W2[
        "popularity"][0]


def test_paired_intervals_per_window_and_pooled(recorded) -> None:
    result = recorded[0]
    tree = result["intervals"]
    assert (tree["metric"], tree["level"], tree["n_boot"]) == ("warm/ndcg@2", 0.95, 1000)
    entry = tree["paired"]["incremental vs full_retrain"]
    # ours beats full_retrain by 0.1 or 0.05 on every warm user: the interval excludes 0.
    assert entry["windows"]["w1"]["diff"] == pytest.approx(0.1)
    assert entry["windows"]["w1"]["lo"] == pytest.approx(0.1)  # constant difference
    a = np.asarray(W1["incremental"][0] + W2["incremental"][0])
    b = np.asarray(W1["full_retrain"][0] + W2["full_retrain"][0])
    diff, lo, hi = paired_bootstrap_diff(a, b)
    pooled = entry["pooled"]
    assert (pooled["diff"], pooled["lo"], pooled["hi"]) == (diff, lo, hi)
    assert pooled["n"] == 7 and pooled["windows"] == ["w1", "w2"] and lo > 0
    method = tree["methods"]["incremental"]["warm/ndcg@2"]
    assert method["mean"] == pytest.approx(float(a.mean())) and method["n"] == 7


def test_verdicts_from_paired_intervals(recorded) -> None:
    result = recorded[0]
    line = compare_line(result, "incremental", "full_retrain", "rec")
    p = result["intervals"]["paired"]["incremental vs full_retrain"]["pooled"]
    ratio = p["mean_a"] / p["mean_b"]
    assert line == (f"rec: incremental's mean warm/ndcg@2 is {ratio:.2f}x full_retrain's "
                    f"({p['mean_a']:.4f} vs {p['mean_b']:.4f} over 7 users in 2 windows), "
                    f"paired 95% CI of the difference [{p['lo']:+.4f}, {p['hi']:+.4f}]: better")
    # No pair (full_retrain, incremental) was bootstrapped: window means, no claim.
    # all ndcg: full_retrain (2.0/5 + 0.95/4) / 2, incremental (2.3/5 + 1.2/4) / 2.
    assert compare_line(result, "full_retrain", "incremental", "rec") == (
        "rec: full_retrain vs incremental on mean ndcg@2: 0.3188 vs 0.3800 (ratio 0.839; "
        "higher on 0/2 evaluated windows): no better/worse claim (no interval in this run)")
    assert compare_line(result, "full_retrain", "popularity", "rec").endswith(
        ": not distinguishable")  # wins on w1, loses on w2


def test_worse_only_when_the_interval_is_below_zero(recorded) -> None:
    result = recorded[0]
    entry = result["intervals"]["paired"]["incremental vs popularity"]["pooled"]
    entry.update(mean_a=0.2, mean_b=0.25, diff=-0.05, lo=-0.08, hi=-0.01)
    assert compare_line(result, "incremental", "popularity", "rec") == (
        "rec: incremental's mean warm/ndcg@2 is 0.80x popularity's (0.2000 vs 0.2500 over 7 "
        "users in 2 windows), paired 95% CI of the difference [-0.0800, -0.0100]: worse")
    entry.update(hi=0.0)
    assert compare_line(result, "incremental", "popularity", "rec").endswith(
        "[-0.0800, +0.0000]: not distinguishable")


def test_rec_and_paired_tables(recorded) -> None:
    result = recorded[0]
    header, rows = rec_table(result)
    assert header[:4] == ["method", "warm ndcg@2 [95% CI]", "all ndcg@2 [95% CI]",
                          "cold ndcg@2"]
    iv = result["intervals"]["methods"]["incremental"]["warm/ndcg@2"]
    assert rows[0][1] == f"{iv['mean']:.4f} [{iv['lo']:.4f}, {iv['hi']:.4f}]"
    assert rows[0][3] == "0.0500"  # cold: users 0.1 (w1) and 0.0 (w2), pooled
    assert rows[0][4] == "not measured"  # no repeat split in these rows
    _, pairs = paired_table(result)
    first = pairs[0]
    assert first[0] == "incremental vs full_retrain" and first[5] == "better"
    assert first[6] == "2 / 0 / 0"


def test_update_times_on_different_trainers_are_not_comparable(recorded) -> None:
    result = recorded[0]
    assert trainer_cell(result, "incremental") == "ray"
    assert trainer_cell(result, "full_retrain") == "local (not comparable: incremental ran on ray)"
    assert trainer_cell(result, "popularity") == "in-process (no trainer)"
    assert summary_table(result)[1][0][-1] == "ray"
    assert time_line(result, "incremental", "full_retrain") == (
        "update cost: incremental vs full_retrain: not comparable (incremental ran on the ray "
        "trainer, full_retrain on local): 2.00 s vs 8.00 s mean wall time per window "
        "(1 windows)")
    text = summary_markdown(result, [])
    assert ("Update wall times are NOT comparable: `incremental` ran on the `ray` trainer, the "
            "other neural arms on `local`") in text
    assert "### rec: paired differences of warm ndcg@2" in text
    assert not math.isnan(result["intervals"]["methods"]["popularity"]["ndcg@2"]["lo"])
