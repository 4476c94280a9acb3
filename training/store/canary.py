"""The canary pointer: a candidate version served beside ``latest`` to part of the traffic.

Stored as ``configs/canary.json`` (local and S3 alike), written by ``shopstream-versions
canary`` and cleared by ``shopstream-versions promote`` of that version (or ``canary
--off``); every serving replica follows it as it follows ``latest.json``::

    {"version": "<id>", "fraction": 0.1, "mode": "canary"}

* ``canary``: a stable ``fraction`` of users (by a hash of the user id; transactions
  without one, by their txn id or at random) get the candidate's answer;
* ``shadow``: everyone gets ``latest``'s answer; the candidate answers the same requests
  beside it, and the two are compared and logged, never returned.

A candidate must be a complete published version (under ``versions/``): publish it without
moving ``latest`` by promoting the incumbent back, or take a gate-passing version from a
sweep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from training.cli import require
from training.store.base import CheckpointStore
from training.store.errors import CheckpointCorruptError, CheckpointMissingError
from training.store.keys import validate_version

CANARY_CONFIG = "canary"
Mode = Literal["canary", "shadow"]
MODES: tuple[str, ...] = ("canary", "shadow")


@dataclass(frozen=True)
class CanarySpec:
    """Which version answers which share of the traffic beside ``latest``."""

    version: str
    fraction: float = 0.05
    mode: Mode = "canary"

    def __post_init__(self) -> None:
        validate_version(self.version)
        require(isinstance(self.fraction, (int, float)) and math.isfinite(self.fraction)
                and 0.0 <= self.fraction <= 1.0, "fraction",
                f"must be in [0, 1], got {self.fraction!r}")
        require(self.mode in MODES, "mode", f"must be one of {list(MODES)}, got {self.mode!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_canary(store: CheckpointStore) -> CanarySpec | None:
    """The store's canary, or None (never set, or cleared)."""
    doc = store.get_config(CANARY_CONFIG)
    if not doc or doc.get("version") is None:
        return None
    try:
        return CanarySpec(version=doc["version"], fraction=float(doc.get("fraction", 0.0)),
                          mode=doc.get("mode", "canary"))
    except (ValueError, TypeError) as exc:
        raise CheckpointCorruptError(f"configs/{CANARY_CONFIG}.json: {exc}") from exc


def write_canary(store: CheckpointStore, spec: CanarySpec | None) -> None:
    """Set the canary (checking the version is published) or clear it (None)."""
    if spec is not None:
        store.verify(spec.version)
        if spec.version not in store.list_versions():
            raise CheckpointMissingError(
                f"{spec.version}: not under versions/ (only a published version can be a "
                "canary)")
    store.put_config(CANARY_CONFIG, spec.to_json() if spec else {"version": None})
