"""benchmarks/metrics_diff.py: a refactor's report check tells volatile leaves (times, version
ids) from moved numbers, and float32 rounding from a real change."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.scripts import load_script

pytestmark = pytest.mark.unit


def load() -> ModuleType:
    return load_script("metrics_diff")


def test_only_real_changes_are_listed() -> None:
    diff = load()
    before = {"methods": {"ours": {"ndcg": 0.25, "n": 10}}, "updates": {"w1": {
        "wall_s": 3.0, "version": "v1", "phases": {"fit": 1.0}}}, "scores": [12.2108564]}
    after = {"methods": {"ours": {"ndcg": 0.25, "n": 10}}, "updates": {"w1": {
        "wall_s": 4.5, "version": "v2", "phases": {"fit": 2.0}}}, "scores": [12.2108573]}
    same = diff.compare(before, after, 1e-6)
    assert (same["identical"], same["volatile"], same["within_tol"]) == (2, 3, 1)
    assert same["different"] == []
    after["methods"]["ours"]["ndcg"] = 0.2501
    moved = diff.compare(before, after, 1e-6)
    assert [r["path"] for r in moved["different"]] == ["/methods/ours/ndcg"]
    assert moved["different"][0]["rel"] == pytest.approx(0.0001 / 0.2501)
    # A leaf on one side only is a difference, never volatile by accident.
    del after["methods"]["ours"]["n"]
    assert "/methods/ours/n" in {r["path"] for r in diff.compare(before, after, 1e-6)["different"]}
