"""Intervals in the pipeline report: cluster.comparison.intervals (computed when a window is
evaluated), the rec tables and verdict lines that read them, and the trainer of each arm's
update."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest

from cluster.comparison.evaluation import RecRow
from cluster.comparison.intervals import (
    N_BOOT,
    pool_rec_intervals,
    rec_pairs,
    record_rec_intervals,
)
from cluster.comparison.report import summary_markdown
from cluster.comparison.tables import paired_table, rec_table, summary_table, trainer_cell
from cluster.comparison.verdicts import compare_line, time_line
from training.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_diff
from training.evaluation.metrics import PerUserRanking

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
        # As the real store: JSON with sorted keys, so a record reads back in name order.
        self.configs[name] = json.loads(json.dumps(data, sort_keys=True))

    def get_config(self, name: str) -> dict[str, Any] | None:
        return self.configs.get(name)


def _row(warm: list[float], cold: list[float], with_cold: bool = True,
         cold_start: int | None = None) -> dict[str, Any]:
    """A rec row for users 0..len(warm)-1 warm and the next ones (from ``cold_start``) cold;
    ``with_cold=False`` leaves the cold per-user values out."""
    users = np.arange(len(warm))
    first = len(warm) if cold_start is None else cold_start
    per = {"warm": PerUserRanking(2, users, np.zeros(len(warm)), np.asarray(warm),
                                  np.zeros(len(warm)), len(warm)),
           "all": PerUserRanking(2, np.arange(len(warm) + len(cold)), np.zeros(0),
                                 np.asarray(warm + cold), np.zeros(0), len(warm) + len(cold))}
    if with_cold:
        per["cold"] = PerUserRanking(2, np.arange(first, first + len(cold)), np.zeros(len(cold)),
                                     np.asarray(cold), np.zeros(len(cold)), len(cold))
    row = RecRow({"ndcg@2": float(np.mean(warm + cold)), "warm/ndcg@2": float(np.mean(warm)),
                  "warm/n_users": float(len(warm)), "n_users": float(len(warm + cold)),
                  "cold/ndcg@2": float(np.mean(cold)), "cold/n_users": float(len(cold))})
    row.per_user = per
    return {"rec": row}


def _record(windows: dict[str, dict[str, tuple[list[float], list[float]]]],
            store: FakeStore | None = None, **row_args: Any) -> dict[str, Any]:
    result, store = _result(), store or FakeStore()
    for wid, data in windows.items():
        out = {m: _row(*v, **row_args) for m, v in data.items()}
        record_rec_intervals(result, store, wid, out, 2)
        result["prequential"][wid] = out
    pool_rec_intervals(result, store)
    return result


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
    assert "methods" not in result["intervals"]  # pooled once, when the run ends
    pool_rec_intervals(result, store)
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
    assert list(tree["methods"]) == list(METHODS)  # the run's order, not the store's sorted one
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
                          "cold ndcg@2 [95% CI] (n)"]
    iv = result["intervals"]["methods"]["incremental"]["warm/ndcg@2"]
    assert rows[0][1] == f"{iv['mean']:.4f} [{iv['lo']:.4f}, {iv['hi']:.4f}]"
    # cold: users 0.1 (w1) and 0.0 (w2), pooled, with their interval and count.
    lo, hi = bootstrap_ci(np.asarray([0.1, 0.0]), N_BOOT)
    assert rows[0][3] == f"0.0500 [{lo:.4f}, {hi:.4f}] (2)"
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
        "trainer, full_retrain on local): 2.00 s vs 8.00 s mean wall time per update after the "
        "first version (1 windows)")
    text = summary_markdown(result, [])
    assert ("Update wall times are NOT comparable: `incremental` ran on the `ray` trainer, the "
            "other neural arms on `local`") in text
    assert "### rec: paired differences of warm ndcg@2" in text
    assert not math.isnan(result["intervals"]["methods"]["popularity"]["ndcg@2"]["lo"])


def test_auto_trainer_updates_are_comparable_and_say_where_each_ran(recorded) -> None:
    result = copy.deepcopy(recorded[0])
    result["settings"] = {"incremental": {"trainer": "auto"}, "arms_trainer": "auto"}
    for window in result["windows"]:
        result["updates"].setdefault(window, {})
        result["updates"][window].setdefault("incremental", {})["trainer"] = "local"
        result["updates"][window].setdefault("full_retrain", {})["trainer"] = "ray"
    n = len(result["windows"])
    assert trainer_cell(result, "incremental") == f"auto (local x{n})"
    assert trainer_cell(result, "full_retrain") == f"auto (ray x{n})"
    assert time_line(result, "incremental", "full_retrain").endswith(
        f"one trainer policy: incremental auto (local x{n}), full_retrain auto (ray x{n}))")
    assert "every neural arm ran with trainer `auto` (comparable; incremental: auto (local " \
        in summary_markdown(result, [])


def test_the_report_says_where_ours_update_time_goes(recorded) -> None:
    result = copy.deepcopy(recorded[0])
    first, second = result["windows"][:2]
    result["updates"] = {first: {"incremental": {"phases": {"prepare": 1.0, "fit": 3.0}},
                                 "full_retrain": {"phases": {"prepare": 2.0, "fit": 6.0}}},
                         second: {"incremental": {"phases": {"prepare": 3.0, "fit": 1.0,
                                                             "publish": 4.0}}}}
    summary = summary_markdown(result, [])
    assert ("Where `incremental`'s update wall time goes (mean over 2 windows, 6.00 s): "
            "prepare 2.00 s (33%), fit 2.00 s (33%), publish 2.00 s (33%).") in summary
    # The full retrain runs the same update, so its phases are the same laps.
    assert ("Where `full_retrain`'s update wall time goes (mean over 1 windows, 8.00 s): "
            "prepare 2.00 s (25%), fit 6.00 s (75%).") in summary


# --------------------------------------------------------------------------- cold users
def _many_cold(shift: float) -> dict[str, tuple[list[float], list[float]]]:
    """30 cold users; popularity's cold NDCG is ours' minus 0.1 / 0.15 / 0.2 (every user);
    warm users identical for every method."""
    ours = [round(0.3 + 0.01 * i + shift, 4) for i in range(30)]
    pop = [round(v - 0.1 - 0.05 * (i % 3), 4) for i, v in enumerate(ours)]
    warm = [0.5, 0.2, 0.7]
    return {"incremental": (warm, ours), "full_retrain": (warm, ours), "popularity": (warm, pop)}


def test_cold_users_clearly_better_on_many_users() -> None:
    result = _record({"w1": _many_cold(0.0), "w2": _many_cold(0.05)})
    tree = result["intervals"]
    assert tree["cold_metric"] == "cold/ndcg@2"
    entry = tree["paired_cold"]["incremental vs popularity"]
    a = np.asarray(_many_cold(0.0)["incremental"][1] + _many_cold(0.05)["incremental"][1])
    b = np.asarray(_many_cold(0.0)["popularity"][1] + _many_cold(0.05)["popularity"][1])
    diff, lo, hi = paired_bootstrap_diff(a, b)
    pooled = entry["pooled"]
    assert (pooled["diff"], pooled["lo"], pooled["hi"]) == (diff, lo, hi)
    assert pooled["diff"] == pytest.approx(0.15) and lo > 0.1
    assert pooled["n"] == 60 and pooled["windows"] == ["w1", "w2"]
    assert sorted(entry["windows"]) == ["w1", "w2"]
    method = tree["methods"]["incremental"]["cold/ndcg@2"]
    assert method["n"] == 60 and method["mean"] == pytest.approx(float(a.mean()))
    # Warm users are identical, so the warm pair is a tie: cold is kept apart from warm.
    assert tree["paired"]["incremental vs popularity"]["pooled"]["diff"] == 0.0
    header, rows = paired_table(result, "paired_cold", "cold_metric")
    assert header[1:3] == ["a cold/ndcg@2", "b cold/ndcg@2"]
    row = dict((r[0], r) for r in rows)["incremental vs popularity"]
    assert row[5] == "better" and row[6] == "2 / 0 / 0"
    assert row[4] == f"+0.1500 [{lo:+.4f}, {hi:+.4f}]"
    assert dict((r[0], r) for r in paired_table(result)[1])["incremental vs popularity"][5] == (
        "not distinguishable")
    text = summary_markdown(result, [])
    warm_at = text.index("### rec: paired differences of warm ndcg@2")
    cold_at = text.index("### rec: paired differences of cold-user ndcg@2")
    assert warm_at < cold_at < text.index("## Staleness")
    assert 'so the intervals are wide and most verdicts will be "not distinguishable".' in text
    assert (f"| incremental vs popularity | 0.4700 | 0.3200 | 1.469 | +0.1500 [{lo:+.4f}, "
            f"{hi:+.4f}] | better | 2 / 0 / 0 |") in text[cold_at:]


def test_three_overlapping_cold_users_are_not_distinguishable() -> None:
    data = {"incremental": ([0.5, 0.6], [0.5, 0.0, 0.3]),
            "full_retrain": ([0.5, 0.6], [0.4, 0.1, 0.3]),
            "popularity": ([0.5, 0.6], [0.2, 0.4, 0.1])}
    result = _record({"w1": data})
    entry = result["intervals"]["paired_cold"]["incremental vs popularity"]
    diff, lo, hi = paired_bootstrap_diff(np.asarray([0.5, 0.0, 0.3]), np.asarray([0.2, 0.4, 0.1]))
    assert entry["pooled"]["n"] == 3 and entry["pooled"]["windows"] == ["w1"]
    assert (entry["pooled"]["lo"], entry["pooled"]["hi"]) == (lo, hi) and lo < 0 < hi
    assert entry["pooled"]["diff"] == pytest.approx(0.1 / 3)
    rows = dict((r[0], r) for r in paired_table(result, "paired_cold", "cold_metric")[1])
    assert rows["incremental vs popularity"][5] == "not distinguishable"
    assert rows["incremental vs popularity"][6] == "0 / 0 / 1"
    cold = rec_table(result)[1][0][3]
    iv = result["intervals"]["methods"]["incremental"]["cold/ndcg@2"]
    assert cold == f"0.2667 [{iv['lo']:.4f}, {iv['hi']:.4f}] (3; 1/2 windows)"


def test_cold_pairs_need_the_same_cold_users() -> None:
    result = _result()
    out = {"incremental": _row([0.5, 0.6], [0.5, 0.0]),
           "full_retrain": _row([0.4, 0.6], [0.4, 0.1], cold_start=5),
           "popularity": _row([0.5, 0.6], [0.2, 0.4])}
    store = FakeStore()
    record_rec_intervals(result, store, "w1", out, 2)
    pool_rec_intervals(result, store)
    tree = result["intervals"]
    assert sorted(tree["paired_cold"]) == ["incremental vs popularity"]
    assert sorted(tree["paired"]) == ["full_retrain vs popularity", "incremental vs full_retrain",
                                      "incremental vs popularity"]


def test_cold_cell_without_interval_is_the_bare_mean_with_n(recorded) -> None:
    result = {**recorded[0], "intervals": {}}
    assert rec_table(result)[1][0][3] == "0.0500 (2; no interval)"
    assert "cold-user" not in summary_markdown(result, [])


def test_old_per_user_values_without_cold_still_pool_warm() -> None:
    store = FakeStore()
    old = _record({"w1": W1}, store, with_cold=False)  # saved before cold users were kept
    saved = store.configs["pipeline-per-user/w1"]["methods"]["incremental"]
    assert sorted(saved) == ["all", "warm", "warm_users"]
    assert "cold/ndcg@2" not in old["intervals"]["methods"]["incremental"]
    assert old["intervals"]["paired_cold"] == {}
    result = _result()
    out = {m: _row(*v) for m, v in W2.items()}
    record_rec_intervals(result, store, "w2", out, 2)
    pool_rec_intervals(result, store)
    result["prequential"] = {"w1": {m: _row(*v) for m, v in W1.items()}, "w2": out}
    tree = result["intervals"]
    a = np.asarray(W1["incremental"][0] + W2["incremental"][0])
    b = np.asarray(W1["full_retrain"][0] + W2["full_retrain"][0])
    warm = tree["methods"]["incremental"]["warm/ndcg@2"]
    assert warm["n"] == 7 and warm["windows"] == ["w1", "w2"]
    assert warm["mean"] == pytest.approx(float(a.mean()))
    pooled = tree["paired"]["incremental vs full_retrain"]["pooled"]
    assert (pooled["diff"], pooled["lo"], pooled["hi"]) == paired_bootstrap_diff(a, b)
    assert pooled["n"] == 7 and pooled["windows"] == ["w1", "w2"]
    # Cold: only w2 has per-user values.
    cold = tree["methods"]["incremental"]["cold/ndcg@2"]
    assert (cold["n"], cold["mean"], cold["windows"]) == (1, 0.0, ["w2"])
    cold_pair = tree["paired_cold"]["incremental vs popularity"]
    assert cold_pair["pooled"]["n"] == 1 and cold_pair["pooled"]["windows"] == ["w2"]
    assert cold_pair["pooled"]["diff"] == pytest.approx(-0.5)
    assert rec_table(result)[1][0][3] == "0.0000 [0.0000, 0.0000] (1; 1/2 windows)"
