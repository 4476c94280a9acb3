"""Choosing and configuring a store: ``open_store(uri)`` and the stage's ``StoreConfig``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from training.cli import require
from training.store.base import CheckpointStore
from training.store.errors import InvalidKeyError, StoreConfigError
from training.store.keys import validate_key
from training.store.local import LocalStore
from training.store.s3 import S3Store

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def open_store(uri: str | os.PathLike[str], endpoint_url: str | None = None) -> CheckpointStore:
    """A :class:`LocalStore` for a plain path or ``file://`` URI, an :class:`S3Store` for
    ``s3://bucket/prefix``; anything else raises :class:`StoreConfigError` naming the URI.
    Nothing is created or contacted until the store is used."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise StoreConfigError(f"store uri {uri!r}: must be a path, file:// or s3:// URI")
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if scheme == "s3":
        bucket, prefix = _parse_s3(uri)
        return S3Store(bucket, prefix, endpoint_url=endpoint_url)
    if endpoint_url is not None:
        raise StoreConfigError(f"store uri {uri!r}: endpoint_url only applies to s3:// URIs")
    if scheme == "file":
        return LocalStore(_parse_file(uri))
    if scheme:
        raise StoreConfigError(
            f"store uri {uri!r}: unknown scheme {scheme!r} (use a path, file:// or s3://)")
    return LocalStore(uri)


def _parse_s3(uri: str) -> tuple[str, str]:
    parts = urlparse(uri)
    if parts.query or parts.fragment or parts.params:
        raise StoreConfigError(f"store uri {uri!r}: no query or fragment allowed")
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise StoreConfigError(f"store uri {uri!r}: bad bucket name {parts.netloc!r}")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix, "prefix")
        except InvalidKeyError as exc:
            raise StoreConfigError(f"store uri {uri!r}: {exc}") from exc
    return parts.netloc, prefix


def _parse_file(uri: str) -> str:
    parts = urlparse(uri)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise StoreConfigError(
            f"store uri {uri!r}: expected file:///absolute/path (three slashes)")
    return unquote(parts.path)


@dataclass(frozen=True)
class StoreConfig:
    """Where checkpoints live and how many to keep."""

    uri: str = field(default="runs/store", metadata={
        "flag": "store",
        "help": "checkpoint store: a directory, file:///abs/path or s3://bucket/prefix"})
    endpoint_url: str | None = field(default=None, metadata={
        "help": "S3 endpoint (MinIO, moto); unset uses AWS_ENDPOINT_URL or AWS itself"})
    keep_last: int = field(default=5, metadata={
        "help": "published versions kept by retention (latest and its parent always are)"})
    title_cache: bool = field(default=True, metadata={
        "help": "keep the frozen encoder's title vectors in the store "
                "(caches/titles/), so an update in a new process encodes only new titles "
                "(training.update.title_cache; with finetune_layers 0)"})

    def __post_init__(self) -> None:
        require(bool(self.uri.strip()), "uri", "must not be empty")
        require(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        require(self.endpoint_url is None or self.uri.startswith("s3://"), "endpoint_url",
                "only applies to s3:// store URIs")

    def open(self) -> CheckpointStore:
        """The store this config names (no I/O until the store is used)."""
        return open_store(self.uri, self.endpoint_url)
