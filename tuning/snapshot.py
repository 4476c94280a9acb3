"""A read-only, in-memory copy of a store's ``latest`` version (and its title vectors,
``training.store.title_vectors``), shipped to every trial.

Trials call :func:`training.update.prepare.prepare_update` exactly as ``training.incremental``
does, but on this snapshot rather than on the store itself: every trial then starts from
the same version even if ``latest`` moves mid-sweep, trial processes need no store
credentials (S3 keys stay with the driver), and relative store paths do not depend on the
trial's working directory. The snapshot travels once through Ray's object store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from training.store import LATEST_KEY, CheckpointMissingError, CheckpointStore, StoreError
from training.store.meta import META_NAME, dump_json
from training.store.title_vectors import TITLE_AREA

SNAPSHOT_AREA = "versions"


class ReadOnlySnapshotError(StoreError):
    """Something tried to write to a sweep's snapshot of the store."""


class SnapshotStore(CheckpointStore):
    """Objects held in a dict; writes are refused (a trial never publishes)."""

    def __init__(self, source_uri: str, objects: dict[str, bytes]) -> None:
        self.source_uri = source_uri
        self.objects = objects

    @property
    def uri(self) -> str:
        return f"snapshot+{self.source_uri}"

    def put_bytes(self, key: str, data: bytes) -> None:
        raise ReadOnlySnapshotError(f"{self._location(key)}: a sweep's snapshot is read-only")

    def put_file(self, key: str, path: Path) -> None:
        raise ReadOnlySnapshotError(f"{self._location(key)}: a sweep's snapshot is read-only")

    def iter_object(self, key: str) -> Iterator[bytes]:
        if key not in self.objects:
            raise CheckpointMissingError(f"{self._location(key)}: missing")
        yield self.objects[key]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete_keys(self, keys: Sequence[str]) -> None:
        if keys:
            raise ReadOnlySnapshotError(f"{self.uri}: a sweep's snapshot is read-only")

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        data = self.objects.get(key)
        return None if data is None else (data, str(len(data)))

    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        raise ReadOnlySnapshotError(f"{self._location(key)}: a sweep's snapshot is read-only")


def snapshot_latest(store: CheckpointStore) -> SnapshotStore:
    """Copy ``latest`` (every file verified by ``store.load``) into memory; an empty store
    gives an empty snapshot (trials then start from the pretrained encoder)."""
    info = store.latest()
    return snapshot_version(store, info.version if info is not None else None)


def snapshot_version(store: CheckpointStore, version: str | None) -> SnapshotStore:
    """A snapshot whose ``latest`` is ``version`` (None: an empty store). The pipeline
    tunes from an older version so that trials train and score on windows already seen."""
    objects: dict[str, bytes] = {}
    if version is not None:
        with tempfile.TemporaryDirectory(prefix="shopstream-snapshot-") as tmp:
            info = store.load(version, Path(tmp))
            prefix = f"{SNAPSHOT_AREA}/{info.version}"
            for name in info.files:
                objects[f"{prefix}/{name}"] = (Path(tmp) / name).read_bytes()
            objects[f"{prefix}/{META_NAME}"] = (Path(tmp) / META_NAME).read_bytes()
        objects[LATEST_KEY] = dump_json({"version": info.version,
                                         "created_at": info.created_at}, LATEST_KEY)
    # The frozen encoder's title vectors, so that no trial encodes the catalogue again.
    for key in store.list_keys(f"{TITLE_AREA}/"):
        objects[key] = b"".join(store.iter_object(key))
    return SnapshotStore(store.uri, objects)
