"""The hot-swap holder: which version a replica serves, and a thread that watches for newer.

A :class:`VersionHolder` polls ``latest()`` (the store's ``latest.json``) every
``poll_interval_s`` in a daemon thread. When it names another version, the thread loads it
(download, checksum verification, model load, precomputation and a probe, all done by the
``load`` callable, off the request path) and only then swaps the reference under a lock.
Readers take :attr:`current` once per batch and use that object to the end, so a request
in flight finishes on the version it started with while the next one gets the new version.
A version that fails is logged with why and skipped (at once when the failure is permanent,
e.g. a bad checksum; after ``max_attempts`` tries otherwise); the previous one keeps serving.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """One loaded version: the object that serves it, its id and when it was swapped in."""

    value: T
    version: str
    loaded_at: str
    load_seconds: float


def release_memory() -> None:
    """Free a dropped version now: torch modules hold reference cycles (so only the cyclic
    GC frees them), and glibc keeps freed heap pages unless asked to return them."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps its pages
        pass


class VersionHolder(Generic[T]):
    """Serves the newest loadable version of ``latest()``; see the module docstring."""

    def __init__(self, latest: Callable[[], str | None], load: Callable[[str], T], *,
                 poll_interval_s: float, max_attempts: int = 3,
                 permanent: tuple[type[BaseException], ...] = (), name: str = "model") -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._latest = latest
        self._load = load
        self._interval = float(poll_interval_s)
        self._max_attempts = max_attempts
        self._permanent = permanent
        self.name = name
        self._current: Loaded[T] | None = None
        self._swap_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    # ---- reading (any thread) ---------------------------------------------------------------

    @property
    def current(self) -> Loaded[T] | None:
        """The version being served (None before the first load). Take it once per unit of
        work: a later read may return a newer version."""
        return self._current

    @property
    def poll_interval_s(self) -> float:
        return self._interval

    # ---- control ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watcher thread; its first check runs at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """Check the store now instead of at the end of the current interval."""
        self._wake.set()

    def set_poll_interval(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {seconds}")
        self._interval = float(seconds)
        self.poke()

    def apply_user_config(self, user_config: Mapping[str, Any] | None) -> None:
        """Serve's ``reconfigure``: ``{"poll_interval_s": s}`` changes the interval; any
        user_config update also triggers a check of the store at once."""
        config = dict(user_config or {})
        unknown = sorted(set(config) - {"poll_interval_s", "generation"})
        if unknown:
            raise ValueError(f"user_config: unknown key(s) {unknown}; expected "
                             "poll_interval_s (and optionally generation, any value, to "
                             "force a check)")
        if "poll_interval_s" in config:
            value = config["poll_interval_s"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"user_config.poll_interval_s: expected a number, got "
                                 f"{value!r}")
            self.set_poll_interval(float(value))
        self.poke()

    # ---- the check ----------------------------------------------------------------------

    def check(self) -> bool:
        """One look at the store; loads and swaps in a new version if there is one.
        Returns whether the served version changed. Never raises."""
        with self._check_lock:
            try:
                version = self._latest()
            except Exception as exc:  # the store may be briefly unreachable: keep serving
                logger.warning("%s: cannot read the latest version: %s", self.name, exc)
                return False
            current = self._current
            if version is None or version in self.skipped or (
                    current is not None and current.version == version):
                return False
            return self._try_load(version)

    def _try_load(self, version: str) -> bool:
        started = time.perf_counter()
        try:
            value = self._load(version)
        except Exception as exc:
            self._record_failure(version, exc)
            return False
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        loaded = Loaded(value, version, now, time.perf_counter() - started)
        with self._swap_lock:
            previous, self._current = self._current, loaded
        self._failures.pop(version, None)
        logger.info("%s: now serving %s (was %s; loaded in %.2f s)", self.name, version,
                    previous.version if previous else None, loaded.load_seconds)
        del previous  # batches still using it keep their own reference until they finish
        release_memory()
        return True

    def _record_failure(self, version: str, exc: Exception) -> None:
        attempts = self._failures.get(version, 0) + 1
        self._failures[version] = attempts
        reason = f"{type(exc).__name__}: {exc}"
        serving = self._current.version if self._current else None
        if isinstance(exc, self._permanent) or attempts >= self._max_attempts:
            self.skipped[version] = reason
            self._failures.pop(version, None)
            logger.error("%s: skipping version %s (attempt %d): %s; still serving %s",
                         self.name, version, attempts, reason, serving)
        else:
            logger.warning("%s: loading version %s failed (attempt %d of %d): %s; still "
                           "serving %s", self.name, version, attempts, self._max_attempts,
                           reason, serving)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._wake.wait(self._interval)
            self._wake.clear()
