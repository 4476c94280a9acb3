"""Versioned checkpoint store: local directory or S3, chosen by URI.

    from training.store import open_store
    with open_store("s3://bucket/shopstream") as store:
        info = store.publish({"model.safetensors": path}, meta={"window": 3}, parent=None)
        store.load(info.version, Path("ckpt"))

See :mod:`training.store.base` for the object layout and the publish protocol.
"""

from training.store.base import ANY_LATEST, LATEST_KEY, CheckpointStore, FileSource
from training.store.config import StoreConfig, open_store
from training.store.errors import (
    CheckpointCorruptError,
    CheckpointMissingError,
    ConcurrentPublishError,
    InvalidKeyError,
    InvalidMetaError,
    StoreConfigError,
    StoreError,
)
from training.store.keys import new_version_id, validate_key, validate_version, version_time
from training.store.local import LocalStore
from training.store.meta import RESERVED_META_KEYS, FileEntry, VersionInfo
from training.store.s3 import S3Store

__all__ = [
    "ANY_LATEST",
    "LATEST_KEY",
    "RESERVED_META_KEYS",
    "CheckpointCorruptError",
    "CheckpointMissingError",
    "CheckpointStore",
    "ConcurrentPublishError",
    "FileEntry",
    "FileSource",
    "InvalidKeyError",
    "InvalidMetaError",
    "LocalStore",
    "S3Store",
    "StoreConfig",
    "StoreConfigError",
    "StoreError",
    "VersionInfo",
    "new_version_id",
    "open_store",
    "validate_key",
    "validate_version",
    "version_time",
]
