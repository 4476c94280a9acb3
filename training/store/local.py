"""Checkpoint store in a local (or mounted network) directory."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from training.store.base import CheckpointStore
from training.store.errors import CheckpointMissingError, ConcurrentPublishError, StoreError
from training.store.meta import CHUNK

_TMP_PREFIX = ".tmp-"


class LocalStore(CheckpointStore):
    """Objects are files under ``root``; every write is temp file + fsync + ``os.replace``,
    so readers see either the old object or the new one, never a partial one. A conditional
    write (``latest.json``) compares and renames under an exclusive ``flock`` of a lock file
    beside it, which serialises the processes of one host (and of hosts whose network file
    system implements flock, as NFSv4 does)."""

    def __init__(self, root: Path | str) -> None:
        # Nothing is created here: opening a store has no side effects until a write.
        self.root = Path(root).expanduser().absolute()

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _folder(self, prefix: str) -> Path | None:
        return self._path(prefix)

    def _atomic_write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX)
        except OSError as exc:
            raise StoreError(f"{self._location(key)}: cannot write ({exc})") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        def write(fh: BinaryIO) -> None:
            fh.write(data)

        self._atomic_write(key, write)

    def put_file(self, key: str, path: Path) -> None:
        def copy(fh: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, CHUNK)

        self._atomic_write(key, copy)

    def iter_object(self, key: str) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise CheckpointMissingError(f"{self._location(key)}: missing") from exc
        with fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix()
                      for p in base.rglob("*") if p.is_file())

    def delete_keys(self, keys: Sequence[str]) -> None:
        parents = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            parents.add(path.parent)
        # Drop folders the deletes emptied (deepest first), never the root itself.
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while folder != self.root and self.root in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.with_name(f".{target.name}.lock")
        with open(lock, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                current = self.read_tagged(key)
                found = None if current is None else current[1]
                if found != tag:
                    raise ConcurrentPublishError(
                        f"{self._location(key)} changed since it was read")
                self.put_bytes(key, data)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
