"""Retention: which versions a store keeps (:meth:`Retention.retain`).

A mixin of :class:`training.store.base.CheckpointStore`, over its layout scan and raw
deletes; it keeps the policy in one file and the store class under one screen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from training.cli import require
from training.store.keys import PUBLISHED_AREA, REJECTED_AREA
from training.store.meta import META_NAME, VersionInfo

logger = logging.getLogger(__name__)


class Retention:
    """``retain`` of a checkpoint store; the store provides the methods stubbed below."""

    if TYPE_CHECKING:
        @property
        def uri(self) -> str: ...

        def latest(self) -> VersionInfo | None: ...

        def delete_keys(self, keys: Sequence[str]) -> None: ...

        def _scan(self, area: str) -> dict[str, list[str]]: ...

        @staticmethod
        def _complete(area: str, groups: Mapping[str, list[str]]) -> list[str]: ...

    def retain(self, keep_last: int) -> list[str]:
        """Delete published versions beyond the newest ``keep_last`` (never ``latest`` or its
        parent) and rejected candidates beyond the newest ``keep_last``; also removes
        leftovers of interrupted publishes older than every kept version.
        Returns the deleted version ids, oldest first."""
        require(isinstance(keep_last, int) and keep_last >= 1, "keep_last",
                f"must be an integer >= 1, got {keep_last!r}")
        current = self.latest()  # raises if latest is broken: never prune blind
        doomed: list[tuple[str, str, list[str]]] = []
        for area in (PUBLISHED_AREA, REJECTED_AREA):
            groups = self._scan(area)
            complete = self._complete(area, groups)
            keep = set(complete[-keep_last:])
            if area == PUBLISHED_AREA and current is not None:
                keep.update(v for v in (current.version, current.parent) if v is not None)
            oldest_kept = min(keep, default=None)
            for version, keys in groups.items():
                leftover = version not in complete and oldest_kept is not None \
                    and version < oldest_kept
                if (version in complete and version not in keep) or leftover:
                    doomed.append((version, area, keys))
        for version, area, keys in sorted(doomed):
            meta_key = f"{area}/{version}/{META_NAME}"
            # meta.json goes first: a half-deleted version then reads as incomplete, not corrupt.
            self.delete_keys([k for k in keys if k == meta_key])
            self.delete_keys([k for k in keys if k != meta_key])
        deleted = [v for v, _, _ in sorted(doomed)]
        if deleted:
            logger.info("retain(keep_last=%d) deleted %d version(s) from %s",
                        keep_last, len(deleted), self.uri)
        return deleted
