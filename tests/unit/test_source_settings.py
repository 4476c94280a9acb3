"""One check of the source settings (#12): every stage's config names the bad field the
same way, because each calls ``training.data.sources.check_source``."""

from __future__ import annotations

import pytest

from training.cli import ConfigError
from training.incremental_config import IncrementalConfig
from training.train import JobConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("config", [IncrementalConfig, JobConfig])
def test_every_stage_rejects_a_bad_source_or_freq_by_name(config: type) -> None:
    with pytest.raises(ConfigError, match=r"freq: must be one of .*'month'.*got 'fortnight'"):
        config(freq="fortnight")
    with pytest.raises(ConfigError, match=r"source: must be one of .*'windows'.*got 'csv'"):
        config(source="csv")
    assert config(source="windows", freq="hour").freq == "hour"
