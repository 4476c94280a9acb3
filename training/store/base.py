"""The checkpoint store: all policy lives here, backends only move raw objects.

Layout under the store root (a directory, or an S3 bucket prefix)::

    versions/<version>/<file>...   files of a published version
    versions/<version>/meta.json   written after every file and verified; its presence
                                   marks the version complete
    rejected/<version>/...         rejected candidates, same shape, status "rejected";
                                   kept apart so versions/ is exactly the promotable lineage
    latest.json                    {"version", "created_at"}; written last, atomically
    configs/<name>.json            small JSON documents (e.g. the run config)
    caches/titles/<hash>.safetensors  the frozen encoder's title vectors (title_vectors)

Publishing uploads every file, then ``meta.json``, reads every object back to check
its sha256 and size, calls :meth:`CheckpointStore._before_promote`, and only then
replaces ``latest.json``: any error or crash before that leaves ``latest`` unchanged.

Concurrent publishers (a sweep and the pipeline, two pipelines) are safe: ``latest.json``
is replaced only if it still holds what the publisher read before uploading (and, when the
caller says so, names the version it gated against) — an S3 conditional write
(``If-Match`` on the ETag, ``If-None-Match: *`` for a first version), or a compare and
atomic rename under a file lock locally. The loser gets :class:`ConcurrentPublishError`;
its version stays under ``versions/``, listed and promotable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

from tqdm import tqdm

from training.store.documents import ConfigDocuments
from training.store.errors import (
    CheckpointCorruptError,
    CheckpointMissingError,
    ConcurrentPublishError,
    InvalidMetaError,
)
from training.store.keys import (
    ANY_LATEST,
    LATEST_KEY,
    PUBLISHED_AREA,
    REJECTED_AREA,
    is_version_id,
    new_version_id,
    validate_version,
)
from training.store.meta import (
    META_NAME,
    FileEntry,
    FileSource,
    Status,
    VersionInfo,
    build_meta,
    check_sources,
    check_stream,
    check_user_meta,
    digest_bytes,
    digest_file,
    dump_json,
    load_json_object,
    parse_meta,
    pointer_version,
)
from training.store.retention import Retention
from training.store.title_vectors import TitleVectors

logger = logging.getLogger(__name__)


_Store = TypeVar("_Store", bound="CheckpointStore")


class CheckpointStore(Retention, ConfigDocuments, TitleVectors, ABC):
    """Versioned checkpoints under one root; see the module docstring for the layout."""

    # ---- raw object operations: the whole of what a backend implements. Public so a
    # backend and the conformance kit can name them; they bypass versioning, so callers
    # that move models use publish/load/promote instead. --------------------------------

    @property
    @abstractmethod
    def uri(self) -> str:
        """Where the store lives, e.g. ``file:///data/ckpt`` or ``s3://bucket/prefix``."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object; a reader never sees a half-written one."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Write one object from a local file."""

    @abstractmethod
    def iter_object(self, key: str) -> Iterator[bytes]:
        """Yield an object's bytes in chunks; raise :class:`CheckpointMissingError` naming
        the key if it does not exist."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (which ends with ``/``), relative to the root."""

    @abstractmethod
    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete objects; keys that are already gone are not an error."""

    @abstractmethod
    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and an opaque tag of this content (S3: its ETag), or None if
        it does not exist."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        """Write one object only if it still has ``tag`` (None: only if it does not
        exist), atomically with the check; else raise :class:`ConcurrentPublishError`."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        return None  # a directory holds no connections

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _before_promote(self, info: VersionInfo) -> None:
        """Called just before ``latest.json`` is written (the crash-injection point of tests)."""
        return None  # nothing to do in production; override to inject a failure

    def _location(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    # ---- reading ------------------------------------------------------------------------

    def latest(self) -> VersionInfo | None:
        """The version ``latest.json`` names, or None for an empty store."""
        version = self._latest_pointer()
        if version is None:
            return None
        try:
            return self._info(version, PUBLISHED_AREA)
        except CheckpointMissingError as exc:
            raise CheckpointMissingError(
                f"{self._location(LATEST_KEY)} names {version}, but {exc}") from exc

    def list_versions(self) -> list[str]:
        """Complete published versions, oldest first."""
        return self._complete(PUBLISHED_AREA, self._scan(PUBLISHED_AREA))

    def list_rejected(self) -> list[str]:
        """Recorded rejected candidates, oldest first."""
        return self._complete(REJECTED_AREA, self._scan(REJECTED_AREA))

    def read_meta(self, version: str) -> dict[str, Any]:
        """The whole ``meta.json`` of a published or rejected version."""
        return dict(self._find(version).meta)

    def load(self, version: str, dest_dir: Path) -> VersionInfo:
        """Copy a version's files (and its ``meta.json``) into ``dest_dir``, verifying each.

        Files are staged under temporary names and renamed only once all of them check
        out, so a failed load adds nothing to ``dest_dir``.
        """
        info = self._find(version)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        area = self._area(info)
        staged: list[tuple[Path, Path]] = []
        try:
            for name, entry in tqdm(sorted(info.files.items()), desc=f"load {version}",
                                    unit="file", disable=None, leave=False):
                final = dest_dir / name
                final.parent.mkdir(parents=True, exist_ok=True)
                part = final.with_name(f".{final.name}.part-{secrets.token_hex(4)}")
                staged.append((part, final))
                with open(part, "wb") as sink:
                    self._verify(f"{area}/{version}/{name}", entry, sink)
            for part, final in staged:
                os.replace(part, final)
        finally:
            for part, _ in staged:
                part.unlink(missing_ok=True)
        (dest_dir / META_NAME).write_bytes(dump_json(dict(info.meta), META_NAME))
        return info

    # ---- writing ------------------------------------------------------------------------

    def publish(self, files: Mapping[str, FileSource], meta: Mapping[str, Any],
                parent: str | None, *, expect_latest: str | None = ANY_LATEST
                ) -> VersionInfo:
        """Store ``files`` (name -> local path or bytes) as a new version with ``parent``
        (None for the first), verify every object read back, then make it ``latest``.
        Any error before the final ``latest.json`` write removes the partial version
        and leaves ``latest`` as it was.

        ``latest.json`` moves only if nobody changed it since this call read it, and, when
        ``expect_latest`` is given, only if it names that version (None: an empty store):
        else :class:`ConcurrentPublishError`, with the new version kept under ``versions/``."""
        seen = self.read_tagged(LATEST_KEY)
        info = self._write_version(PUBLISHED_AREA, files, meta, parent, None)
        self._swap_latest(info, seen, expect_latest)
        logger.info("published %s (parent %s, %d files) to %s",
                    info.version, parent, len(info.files), self.uri)
        return info

    def record_rejected(self, files: Mapping[str, FileSource], meta: Mapping[str, Any],
                        parent: str | None, *, reason: str,
                        metrics: Mapping[str, Any] | None = None) -> VersionInfo:
        """Keep a candidate that failed its gate, with why, under ``rejected/``;
        ``latest`` does not move. ``files`` may be empty to record only the verdict."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidMetaError(f"reason {reason!r}: a rejected candidate needs a reason")
        rejection = {"reason": reason, "metrics": dict(metrics or {})}
        info = self._write_version(REJECTED_AREA, files, meta, parent, rejection)
        logger.info("recorded rejected candidate %s (parent %s): %s", info.version, parent,
                    reason)
        return info

    def promote(self, version: str, *, expect_latest: str | None = ANY_LATEST) -> VersionInfo:
        """Point ``latest`` at an existing published version (e.g. to roll back), under the
        same condition as :meth:`publish`. Use :meth:`verify` first to refuse a version
        whose files do not check out."""
        seen = self.read_tagged(LATEST_KEY)
        info = self._info(validate_version(version), PUBLISHED_AREA)
        self._before_promote(info)
        self._swap_latest(info, seen, expect_latest)
        logger.info("promoted %s to latest in %s", version, self.uri)
        return info

    def verify(self, version: str) -> VersionInfo:
        """Read every file of a published or rejected version back and check its size and
        sha256 (:class:`CheckpointCorruptError` / :class:`CheckpointMissingError` if not)."""
        return self._verify_files(self._find(version))

    @contextlib.contextmanager
    def opened(self, version: str, prefix: str = "shopstream-load-"
               ) -> Iterator[tuple[VersionInfo, Path]]:
        """A folder of ``version``'s files, each verified, to read inside the block. A store
        of local files (:class:`LocalStore`) yields its own folder, verified in place (a
        replica's reload writes no 65 MB copy); others download to a temporary folder.
        Published files are never rewritten, so what was verified is what is read."""
        info = self._find(version)
        folder = self._folder(f"{self._area(info)}/{version}")
        if folder is not None:
            yield self._verify_files(info), folder
            return
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield self.load(version, Path(tmp)), Path(tmp)

    # ---- internals ----------------------------------------------------------------------

    def _folder(self, prefix: str) -> Path | None:
        """The local folder holding the objects under ``prefix``, for a store whose objects
        are files (:meth:`opened` reads them in place); None here."""
        return None

    @staticmethod
    def _area(info: VersionInfo) -> str:
        return PUBLISHED_AREA if info.status == "published" else REJECTED_AREA

    def _verify_files(self, info: VersionInfo) -> VersionInfo:
        for name, entry in sorted(info.files.items()):
            self._verify(f"{self._area(info)}/{info.version}/{name}", entry)
        return info

    def _read_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_object(key))

    def _latest_pointer(self) -> str | None:
        try:
            raw = self._read_bytes(LATEST_KEY)
        except CheckpointMissingError:
            return None
        version = load_json_object(raw, self._location(LATEST_KEY)).get("version")
        if not is_version_id(version):
            raise CheckpointCorruptError(
                f"{self._location(LATEST_KEY)}: bad version {version!r}")
        return str(version)

    def _info(self, version: str, area: str) -> VersionInfo:
        key = f"{area}/{version}/{META_NAME}"
        info = parse_meta(self._read_bytes(key), self._location(key), version)
        expected = "published" if area == PUBLISHED_AREA else "rejected"
        if info.status != expected:
            raise CheckpointCorruptError(
                f"{self._location(key)}: status {info.status!r} under {area}/")
        return info

    def _find(self, version: str) -> VersionInfo:
        validate_version(version)
        for area in (PUBLISHED_AREA, REJECTED_AREA):
            try:
                return self._info(version, area)
            except CheckpointMissingError:
                pass
        raise CheckpointMissingError(
            f"{self._location(f'{PUBLISHED_AREA}/{version}/{META_NAME}')}: no such version "
            f"(nor under {REJECTED_AREA}/)")

    def _scan(self, area: str) -> dict[str, list[str]]:
        """Keys under ``area/`` grouped by version id; foreign names are ignored."""
        groups: dict[str, list[str]] = {}
        for key in self.list_keys(f"{area}/"):
            version = key[len(area) + 1:].split("/", 1)[0]
            if is_version_id(version):
                groups.setdefault(version, []).append(key)
            else:
                logger.debug("ignoring foreign object %s", self._location(key))
        return groups

    @staticmethod
    def _complete(area: str, groups: Mapping[str, list[str]]) -> list[str]:
        return sorted(v for v, keys in groups.items() if f"{area}/{v}/{META_NAME}" in keys)

    def _verify(self, key: str, entry: FileEntry, sink: BinaryIO | None = None) -> None:
        check_stream(self.iter_object(key), entry, self._location(key), sink)

    def _swap_latest(self, info: VersionInfo, seen: tuple[bytes, str] | None,
                     expect_latest: str | None) -> None:
        """Point ``latest.json`` at ``info`` if it still holds ``seen`` (read before the
        upload) and, unless ANY_LATEST, names ``expect_latest``."""
        kept = f"{info.version} is kept under {PUBLISHED_AREA}/ but is not latest"
        if expect_latest is not ANY_LATEST:
            named = pointer_version(seen[0]) if seen is not None else None
            if named != expect_latest:
                raise ConcurrentPublishError(
                    f"{self._location(LATEST_KEY)} names {named}, expected {expect_latest} "
                    f"(another publisher moved it); {kept}")
        doc = {"version": info.version, "created_at": info.created_at}
        try:
            self.put_if(LATEST_KEY, dump_json(doc, LATEST_KEY),
                         None if seen is None else seen[1])
        except ConcurrentPublishError as exc:
            raise ConcurrentPublishError(f"{exc}; {kept}") from exc

    def _write_version(self, area: str, files: Mapping[str, FileSource],
                       meta: Mapping[str, Any], parent: str | None,
                       rejection: Mapping[str, Any] | None) -> VersionInfo:
        """Upload, verify and (for published versions) pass the pre-promote hook; on any
        error remove what was written, so only complete versions remain."""
        sources = check_sources(files)
        check_user_meta(meta)
        if parent is not None:
            self._info(validate_version(parent), PUBLISHED_AREA)
        entries = {n: digest_bytes(s) if isinstance(s, bytes) else digest_file(s)
                   for n, s in sources.items()}
        after = max((v for v in (parent, self._latest_or_none()) if v), default=None)
        version, created = new_version_id(after)
        status: Status = "published" if rejection is None else "rejected"
        doc = build_meta(meta, version=version, parent=parent, created_at=created,
                         status=status, files=entries, rejection=rejection)
        meta_key = f"{area}/{version}/{META_NAME}"
        meta_bytes = dump_json(doc, meta_key)
        try:
            for name, src in tqdm(sorted(sources.items()), desc=f"upload {version}",
                                  unit="file", disable=None, leave=False):
                key = f"{area}/{version}/{name}"
                if isinstance(src, bytes):
                    self.put_bytes(key, src)
                else:
                    self.put_file(key, src)
            self.put_bytes(meta_key, meta_bytes)
            for name, entry in entries.items():
                self._verify(f"{area}/{version}/{name}", entry)
            self._verify(meta_key, digest_bytes(meta_bytes))
            info = parse_meta(meta_bytes, self._location(meta_key), version)
            if rejection is None:
                self._before_promote(info)
        except Exception:
            self._discard(f"{area}/{version}/")
            raise
        return info

    def _latest_or_none(self) -> str | None:
        try:
            return self._latest_pointer()
        except CheckpointCorruptError:
            logger.warning("%s is unreadable; publishing replaces it",
                           self._location(LATEST_KEY))
            return None

    def _discard(self, prefix: str) -> None:
        try:
            self.delete_keys(self.list_keys(prefix))
        except Exception:  # the original error matters more than a failed cleanup
            logger.warning("could not remove partial %s", self._location(prefix),
                           exc_info=True)
