"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray evaluates this when it is imported, so it is set before any test module imports
# ray: single-node Ray then binds to 127.0.0.1 and every server here stays on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The full shared data: env SHOPSTREAM_SHARED_DATA, else ``../shared/data``; else skip."""
    path = Path(os.environ.get("SHOPSTREAM_SHARED_DATA") or REPO / ".." / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set SHOPSTREAM_SHARED_DATA)")
    return path.resolve()
