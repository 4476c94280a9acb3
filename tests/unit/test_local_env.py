"""training.cli.default_env: the one set of environment defaults for a Ray that our entry
points start (loopback, no usage stats, offline encoder); what the user set wins."""

from __future__ import annotations

import os

import pytest

from training.cli import LOCAL_RAY_ENV, default_env

pytestmark = pytest.mark.unit


def test_defaults_fill_only_what_the_user_left_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LOCAL_RAY_ENV, "EXTRA_SETTING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    default_env({"EXTRA_SETTING": "x", "TOKENIZERS_PARALLELISM": "true"})
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"  # the user's own value
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["EXTRA_SETTING"] == "x"
    # The shared defaults come first: an extra set cannot loosen them.
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
