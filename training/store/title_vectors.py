"""Frozen title vectors beside the versions: ``caches/titles/<signature>.safetensors``.

With the text encoder wholly frozen (``finetune_layers=0``, the default) a title's vector
depends only on the title and the frozen weights. A process keeps them in memory
(``training.model.text``), but every update that starts in a new process
(``training.incremental`` as a job, each Tune trial) would encode its whole catalogue again:
about half of a standalone Online Retail update. So the store keeps them, one object per
hash of the frozen weights (``TextEncoder.frozen_signature``), read by the next update
(``training.update.title_cache``).

The object is a safetensors file: one float32 array ``vectors`` [n, dim], one row per title,
and the titles (a JSON list, in row order) under ``titles`` in its header's metadata. It is
written whole with one atomic put; the last writer wins, and every writer's rows are the
same titles' vectors under the same weights. A file that cannot be read is logged and
treated as absent (the next write replaces it): a cache never fails an update.

A mixin of :class:`training.store.base.CheckpointStore`, over its raw object operations.
Retention leaves this area alone: one object per set of frozen weights, rewritten in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from training.store.errors import CheckpointMissingError
from training.store.keys import validate_key

logger = logging.getLogger(__name__)

TITLE_AREA = "caches/titles"
VECTORS = "vectors"
TITLES = "titles"


class TitleVectorError(ValueError):
    """A title-vector object whose contents do not fit its format (the field is named)."""


def pack_title_vectors(vectors: Mapping[str, np.ndarray]) -> bytes:
    """The object's bytes: ``vectors``' rows stacked in its order, the titles in the header."""
    titles = list(vectors)
    rows = [np.asarray(vectors[t], dtype=np.float32).reshape(-1) for t in titles]
    array = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return bytes(save({VECTORS: np.ascontiguousarray(array)},
                      metadata={TITLES: json.dumps(titles, ensure_ascii=False)}))


def unpack_title_vectors(raw: bytes) -> dict[str, np.ndarray]:
    """{title: float32 [dim]} from :func:`pack_title_vectors`' bytes; raises
    :class:`TitleVectorError` naming what is wrong."""
    try:
        array = load(raw)[VECTORS]
        header_len = int.from_bytes(raw[:8], "little")
        metadata: Any = json.loads(raw[8:8 + header_len]).get("__metadata__") or {}
        titles = json.loads(metadata[TITLES])
    except (SafetensorError, KeyError, ValueError, AttributeError) as exc:
        raise TitleVectorError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles):
        raise TitleVectorError(f"{TITLES}: expected a list of strings")
    if len(set(titles)) != len(titles):
        raise TitleVectorError(f"{TITLES}: a title appears twice")
    if array.dtype != np.float32 or array.ndim != 2 or (titles and len(array) != len(titles)):
        raise TitleVectorError(f"{VECTORS}: expected float32 [{len(titles)}, dim], got "
                               f"{array.dtype} {list(array.shape)}")
    if not np.isfinite(array).all():
        raise TitleVectorError(f"{VECTORS}: non-finite values")
    return {title: array[i] for i, title in enumerate(titles)}


class TitleVectors:
    """``put_title_vectors`` / ``get_title_vectors`` of a checkpoint store; the store
    provides the methods stubbed below."""

    if TYPE_CHECKING:
        def put_bytes(self, key: str, data: bytes) -> None: ...

        def _read_bytes(self, key: str) -> bytes: ...

        def _location(self, key: str) -> str: ...

    def put_title_vectors(self, signature: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Replace the object of ``signature`` with ``vectors`` (title -> [dim])."""
        self.put_bytes(title_key(signature), pack_title_vectors(vectors))

    def get_title_vectors(self, signature: str) -> dict[str, np.ndarray]:
        """The stored vectors of ``signature``; empty when none were written, or (logged)
        when the object cannot be read."""
        key = title_key(signature)
        try:
            raw = self._read_bytes(key)
        except CheckpointMissingError:
            return {}
        try:
            return unpack_title_vectors(raw)
        except TitleVectorError as exc:
            logger.warning("%s: %s; ignored (the titles are encoded again and the object "
                           "rewritten)", self._location(key), exc)
            return {}


def title_key(signature: str) -> str:
    return f"{TITLE_AREA}/{validate_key(signature, 'title vector signature')}.safetensors"
