"""benchmarks/data_scaling.py's driver steps: each wrapped call is a step with the RSS at
its start and its peak, the time after it is its own step, and the Markdown lists them."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tests.support.scripts import load_script

pytestmark = pytest.mark.unit


def test_a_wrapped_call_is_a_step_with_its_start_and_peak_rss() -> None:
    bench = load_script("data_scaling")
    stages = bench.DriverStages()
    owner = types.SimpleNamespace(build=lambda n: np.ones(n, dtype=np.uint8).sum())
    stages.wrap(owner, "build")
    stages.wrap(owner, "not_in_this_checkout")  # an older checkout lacks it: skipped
    assert not hasattr(owner, "not_in_this_checkout")
    stages.enter("before")
    assert owner.build(64 * 2 ** 20) == 64 * 2 ** 20  # 64 MiB touched and freed
    assert list(stages.steps) == ["start", "before", "build", "after build"]
    assert stages.current == "after build"
    step = stages.steps["build"]
    assert step["peak_mib"] >= step["start_mib"] > 0
    # The sampler thread may miss a short call's peak, never the step's own entry/exit.
    assert stages.steps["after build"]["start_mib"] > 0
    lines = bench.steps_table([{"path": "shards", "scale": 1, "driver_steps": stages.steps},
                               {"path": "baseline", "scale": 1}])
    assert lines[2] == "| step | shards 1x |"
    assert any(line.startswith("| build | ") for line in lines)
    assert bench.steps_table([{"path": "baseline", "scale": 1}]) == []
