"""One check of the source settings (#12): every stage's config composes
``training.data.sources.SourceConfig``, so a bad field is named the same way everywhere."""

from __future__ import annotations

import dataclasses

import pytest

from training.cli import ConfigError, config_from_dict, with_settings
from training.data.source_config import SourceConfig
from training.incremental_config import IncrementalConfig
from training.train import JobConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("config", [IncrementalConfig(), JobConfig()])
def test_every_stage_rejects_a_bad_source_or_freq_by_name(config: object) -> None:
    with pytest.raises(ConfigError, match=r"freq: must be one of .*'month'.*got 'fortnight'"):
        with_settings(config, freq="fortnight")
    with pytest.raises(ConfigError, match=r"source: must be one of .*'windows'.*got 'csv'"):
        with_settings(config, source="csv")
    changed = with_settings(config, source="windows", freq="hour")
    assert changed.source == SourceConfig("windows", None, "hour")  # type: ignore[attr-defined]


def test_flat_settings_reach_the_config_that_holds_them() -> None:
    inc = IncrementalConfig.of(source="ulb", store="s3://b/p", endpoint_url="http://h:1",
                               num_workers=3, replay_ratio=0.1)
    assert (inc.source.name, inc.store.uri, inc.store.endpoint_url) == \
        ("ulb", "s3://b/p", "http://h:1")
    assert (inc.scaling.num_workers, inc.continual.replay_ratio) == (3, 0.1)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['replay'\]"):
        inc.with_settings(replay=0.2)
    with pytest.raises(ConfigError, match="endpoint_url"):  # the store's own check
        IncrementalConfig.of(store="runs/store", endpoint_url="http://h:1")
    public = inc.public_dict()  # a version's meta: no endpoints (they can carry hosts)
    assert "endpoint_url" not in public["store"] and "ray_address" not in public["scaling"]
    assert config_from_dict(IncrementalConfig, dataclasses.asdict(inc)) == inc  # across Ray
