"""What a version records about itself: ``meta.json`` assembly, parsing and checksums.

``meta.json`` is the caller's metadata plus the store's reserved fields
(``version``, ``parent``, ``created_at``, ``status``, ``files`` and, for rejected
candidates, ``rejection``). JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from training.store.errors import (
    CheckpointCorruptError,
    CheckpointMissingError,
    InvalidKeyError,
    InvalidMetaError,
)
from training.store.keys import is_version_id, validate_key

# What a version's file is published from: a local file or its bytes.
FileSource = Path | bytes


META_NAME = "meta.json"
RESERVED_META_KEYS = frozenset({"version", "parent", "created_at", "status", "files", "rejection"})
Status = Literal["published", "rejected"]
STATUSES: tuple[str, ...] = ("published", "rejected")
CHUNK = 1 << 20
_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class FileEntry:
    """Checksum and byte size of one stored file."""

    sha256: str
    size: int


@dataclass(frozen=True)
class VersionInfo:
    """One stored version as its ``meta.json`` describes it (``meta`` is the whole document)."""

    version: str
    parent: str | None
    created_at: str
    status: Status
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def user_meta(self) -> dict[str, Any]:
        """The caller's metadata, without the store's reserved fields."""
        return {k: v for k, v in self.meta.items() if k not in RESERVED_META_KEYS}


def dump_json(doc: Any, what: str, sort_keys: bool = True) -> bytes:
    """Strict JSON bytes (no NaN/Infinity, which other JSON readers reject); keys sorted
    unless ``sort_keys=False`` keeps the document's own order."""
    try:
        return json.dumps(doc, indent=2, sort_keys=sort_keys, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidMetaError(
            f"{what}: not plain JSON ({exc}); encode NaN/inf as null or a string") from exc


def load_json_object(raw: bytes, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointCorruptError(f"{key}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointCorruptError(f"{key}: expected a JSON object, got {type(doc).__name__}")
    return doc


def digest_bytes(data: bytes) -> FileEntry:
    return FileEntry(hashlib.sha256(data).hexdigest(), len(data))


def digest_chunks(chunks: Iterable[bytes], sink: BinaryIO | None = None) -> FileEntry:
    """sha256 and size of an object streamed as ``chunks`` (each copied to ``sink``)."""
    sha = hashlib.sha256()
    size = 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return FileEntry(sha.hexdigest(), size)


def digest_file(path: Path) -> FileEntry:
    with open(path, "rb") as fh:
        return digest_chunks(iter(lambda: fh.read(CHUNK), b""))


def check_stream(chunks: Iterable[bytes], entry: FileEntry, where: str,
                 sink: BinaryIO | None = None) -> None:
    """Consume an object's ``chunks`` (copying them to ``sink``), checking size and sha256
    against ``entry``; :class:`CheckpointCorruptError` naming ``where`` if they differ."""
    got = digest_chunks(chunks, sink)
    if got.size != entry.size:
        raise CheckpointCorruptError(f"{where}: {got.size} bytes, expected {entry.size} "
                                     "(truncated?)")
    if got.sha256 != entry.sha256:
        raise CheckpointCorruptError(f"{where}: sha256 {got.sha256} != expected {entry.sha256}")


def validate_file_names(names: list[str]) -> None:
    """File names are keys; ``meta.json`` is the store's, and no name may be another's folder."""
    for name in names:
        validate_key(name, "file name")
        if name == META_NAME:
            raise InvalidKeyError(f"file name {name!r}: reserved for the store's metadata")
    for name in names:
        if any(other.startswith(name + "/") for other in names):
            raise InvalidKeyError(f"file name {name!r}: also used as a folder by another file")


def check_user_meta(meta: Mapping[str, Any]) -> None:
    clash = sorted(RESERVED_META_KEYS.intersection(meta))
    if clash:
        raise InvalidMetaError(f"meta field(s) {clash}: reserved for the store")
    if not all(isinstance(k, str) for k in meta):
        raise InvalidMetaError("meta: every key must be a string")
    dump_json(dict(meta), "meta")


def build_meta(user_meta: Mapping[str, Any], *, version: str, parent: str | None,
               created_at: datetime, status: Status, files: Mapping[str, FileEntry],
               rejection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = dict(user_meta)
    doc.update(
        version=version,
        parent=parent,
        created_at=created_at.isoformat(timespec="microseconds"),
        status=status,
        files={n: {"sha256": e.sha256, "size": e.size} for n, e in sorted(files.items())},
    )
    if rejection is not None:
        doc["rejection"] = dict(rejection)
    return doc


def _file_entry(name: Any, raw: Any, key: str) -> FileEntry:
    try:
        validate_key(name, "file name")
    except InvalidKeyError as exc:
        raise CheckpointCorruptError(f"{key}: {exc}") from exc
    ok = (isinstance(raw, dict) and isinstance(raw.get("sha256"), str)
          and len(raw["sha256"]) == 64 and set(raw["sha256"]) <= _SHA256_HEX
          and isinstance(raw.get("size"), int) and raw["size"] >= 0)
    if not ok:
        raise CheckpointCorruptError(f"{key}: bad entry for file {name!r}: {raw!r}")
    return FileEntry(raw["sha256"], raw["size"])


def parse_meta(raw: bytes, key: str, version: str) -> VersionInfo:
    """Parse and check a ``meta.json`` read from ``key``; anything off is corruption."""
    doc = load_json_object(raw, key)
    if doc.get("version") != version:
        raise CheckpointCorruptError(
            f"{key}: records version {doc.get('version')!r}, expected {version!r}")
    parent = doc.get("parent")
    if parent is not None and not is_version_id(parent):
        raise CheckpointCorruptError(f"{key}: bad parent {parent!r}")
    if doc.get("status") not in STATUSES or not isinstance(doc.get("created_at"), str):
        raise CheckpointCorruptError(f"{key}: bad status/created_at")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise CheckpointCorruptError(f"{key}: 'files' must be an object")
    entries = {name: _file_entry(name, entry, key) for name, entry in files.items()}
    return VersionInfo(version=version, parent=parent, created_at=doc["created_at"],
                       status=doc["status"], files=entries, meta=doc)


def pointer_version(raw: bytes) -> str | None:
    """The version a ``latest.json`` document names (None if it names none readably)."""
    try:
        version = json.loads(raw).get("version")
    except (ValueError, AttributeError):
        return None
    return str(version) if is_version_id(version) else None


def check_sources(files: Mapping[str, FileSource]) -> dict[str, FileSource]:
    """The files of a version to publish, checked: safe names, bytes or existing files."""
    validate_file_names(list(files))
    sources: dict[str, FileSource] = {}
    for name, src in files.items():
        if isinstance(src, (bytes, bytearray, memoryview)):
            sources[name] = bytes(src)
        elif isinstance(src, Path):
            if not src.is_file():
                raise CheckpointMissingError(f"file {name!r}: source {src} is not a file")
            sources[name] = src
        else:
            raise TypeError(f"file {name!r}: expected pathlib.Path or bytes, got "
                            f"{type(src).__name__}")
    return sources
