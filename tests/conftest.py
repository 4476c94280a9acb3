"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The full shared data: env SHOPSTREAM_SHARED_DATA, else ``../shared/data``; else skip."""
    path = Path(os.environ.get("SHOPSTREAM_SHARED_DATA") or REPO / ".." / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set SHOPSTREAM_SHARED_DATA)")
    return path.resolve()
