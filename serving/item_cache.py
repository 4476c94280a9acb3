"""Title vectors computed once per node: a small on-disk cache shared by replicas.

Projecting every catalogue title through the text encoder is the expensive part of loading
a version (about 40 titles/s per busy CPU core with MiniLM). The result depends only on the
text tower's weights (encoder + title projection) and the titles, so it is keyed by a digest
of exactly those: the Recommender and FraudScorer replicas on one node (and a restarted
replica, or a version that did not retrain the encoder) compute it once. Files are
safetensors written atomically under an exclusive lock; a file that does not read back with
the expected shape and finite values is ignored and recomputed. Nothing is pickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_DIR_NAME = "shopstream-serve-cache"
TENSOR = "projected"


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / DEFAULT_DIR_NAME


def module_digest(modules: Iterable[nn.Module], extra: str = "") -> str:
    """sha256 over the named tensors (names, dtypes, shapes, bytes) of ``modules``."""
    sha = hashlib.sha256(extra.encode())
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            value = tensor.detach().to("cpu").contiguous()
            sha.update(f"{index}:{name}:{value.dtype}:{tuple(value.shape)}".encode())
            sha.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def titles_digest(titles: list[str]) -> str:
    # JSON keeps the list unambiguous (quotes and separators are escaped) and is fast.
    return hashlib.sha256(json.dumps(titles, ensure_ascii=False).encode("utf-8")).hexdigest()


class ItemVectorCache:
    """``get(key, shape, compute)``: the cached tensor, or ``compute()`` stored for next time.

    ``folder=None`` disables the cache (every call computes)."""

    def __init__(self, folder: Path | None, keep: int = 6) -> None:
        self.folder = folder
        self.keep = keep

    def get(self, key: str, shape: tuple[int, int],
            compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """(tensor, hit)."""
        if self.folder is None:
            return compute(), False
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.safetensors"
        with open(self.folder / f"{key}.lock", "a+b") as lock:
            # Replicas of one node wait for the first to finish instead of repeating it.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                cached = self._read(path, shape)
                if cached is not None:
                    os.utime(path)
                    return cached, True
                value = compute()
                self._write(path, value)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._prune()
        return value, False

    @staticmethod
    def _read(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            value = load_file(str(path)).get(TENSOR)
        except (OSError, SafetensorError) as exc:
            logger.warning("ignoring unreadable item-vector cache %s: %s", path, exc)
            return None
        if value is None or tuple(value.shape) != shape or not torch.isfinite(value).all():
            logger.warning("ignoring item-vector cache %s: not a finite %s tensor", path, shape)
            return None
        return value

    @staticmethod
    def _write(path: Path, value: torch.Tensor) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file({TENSOR: value.detach().to("cpu").contiguous()}, str(tmp))
            os.replace(tmp, path)
        except OSError as exc:  # a full or read-only disk only costs the next load time
            logger.warning("could not write item-vector cache %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        assert self.folder is not None
        dated = []
        for path in self.folder.glob("*.safetensors"):
            try:
                dated.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # another replica pruned it meanwhile
                continue
        for _, old in sorted(dated)[:-self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".lock").unlink(missing_ok=True)
