"""Object-key validation and time-ordered, collision-free version ids.

A version id is ``v<UTC yyyymmddTHHMMSSffffff>Z-<8 hex>``: fixed width, so lexical
order is time order, and the random suffix keeps two writers on different machines
from colliding in the same microsecond.
"""

from __future__ import annotations

import re
import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from training.store.errors import InvalidKeyError

# The store's layout under its root (see training.store.base).
LATEST_KEY = "latest.json"
PUBLISHED_AREA = "versions"
REJECTED_AREA = "rejected"
CONFIG_AREA = "configs"

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_VERSION = re.compile(r"v(\d{8}T\d{12})Z-[0-9a-f]{8}")
_TIME_FORMAT = "%Y%m%dT%H%M%S%f"
_TICK = timedelta(microseconds=1)

_last_time: datetime | None = None
_lock = threading.Lock()


def validate_key(key: str, what: str = "key") -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKeyError`.

    Rejected: empty keys, absolute paths, backslashes, empty / ``.`` segments, any ``..``,
    and characters outside ``[A-Za-z0-9._/-]``; these are the cases that could escape the
    store's root on disk or map to different objects on S3 and on a filesystem.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"{what} {key!r}: must be a non-empty string")
    if "\\" in key:
        raise InvalidKeyError(f"{what} {key!r}: backslashes are not allowed")
    if key.startswith("/"):
        raise InvalidKeyError(f"{what} {key!r}: absolute paths are not allowed")
    if ".." in key:
        raise InvalidKeyError(f"{what} {key!r}: '..' is not allowed")
    if any(seg in ("", ".") for seg in key.split("/")):
        raise InvalidKeyError(f"{what} {key!r}: empty or '.' path segments are not allowed")
    if not _KEY_CHARS.fullmatch(key):
        raise InvalidKeyError(f"{what} {key!r}: only A-Z a-z 0-9 . _ - / are allowed")
    return key


def is_version_id(text: object) -> bool:
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


def validate_version(version: str) -> str:
    """Return ``version`` if it has the shape :func:`new_version_id` makes."""
    if not is_version_id(version):
        raise InvalidKeyError(
            f"version {version!r}: expected v<yyyymmddTHHMMSSffffff>Z-<8 hex digits>")
    return version


def version_time(version: str) -> datetime:
    """The UTC time encoded in a version id."""
    match = _VERSION.fullmatch(validate_version(version))
    assert match is not None
    return datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=timezone.utc)


def new_version_id(after: str | None = None,
                   now: datetime | None = None) -> tuple[str, datetime]:
    """A fresh ``(version id, created_at)`` that sorts after ``after`` and after every id
    this process made before, even if the wall clock stepped back."""
    global _last_time
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    with _lock:
        floors = [t + _TICK for t in (_last_time,) if t is not None]
        if after is not None:
            floors.append(version_time(after) + _TICK)
        stamp = max([stamp, *floors])
        _last_time = stamp
    return f"v{stamp.strftime(_TIME_FORMAT)}Z-{secrets.token_hex(4)}", stamp


class _Any:
    """``expect_latest`` default: any current ``latest`` will do (only that it not change
    while publishing)."""

    def __repr__(self) -> str:
        return "ANY_LATEST"


ANY_LATEST: Any = _Any()
