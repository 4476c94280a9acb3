"""training.update.phases: an update's wall time split into consecutive phases."""

from __future__ import annotations

import pytest

import training.update.phases
from training.update.phases import Laps

pytestmark = pytest.mark.unit


def test_each_lap_gets_the_time_since_the_previous_one(monkeypatch) -> None:
    clock = iter([10.0, 11.5, 14.0, 14.25, 20.0])
    monkeypatch.setattr(training.update.phases.time, "perf_counter", lambda: next(clock))
    laps = Laps()  # 10.0
    assert laps.lap("prepare") == 1.5
    assert laps.lap("fit") == 2.5
    laps.lap("prepare")  # a phase seen twice adds up
    assert laps.to_json() == {"prepare": 1.75, "fit": 2.5}
    assert laps.total() == 10.0
