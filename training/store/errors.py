"""Named errors of the checkpoint store; every message names the offending key or URI."""

from __future__ import annotations

from training.cli import ConfigError


class StoreError(Exception):
    """Base class of every checkpoint-store failure."""


class StoreConfigError(StoreError, ConfigError):
    """The store URI (or endpoint) cannot be used; the message names the URI."""


class InvalidKeyError(StoreError, ValueError):
    """An object key, file name, config name or version id is not allowed."""


class InvalidMetaError(StoreError, ValueError):
    """Caller metadata uses a reserved field or is not plain JSON."""


class CheckpointMissingError(StoreError):
    """An object the store needs (a file, ``meta.json``, a parent version) does not exist."""


class CheckpointCorruptError(StoreError):
    """An object exists but its size or sha256 differs from what ``meta.json`` records,
    or a JSON document of the store cannot be parsed."""


class ConcurrentPublishError(StoreError):
    """``latest.json`` changed between the publisher's read and its write (another publisher
    won), or no longer names the version the caller expected. The losing version stays
    under ``versions/`` (listed, promotable); ``latest`` keeps the winner's."""
