"""The hot-swap holder: which version a replica serves, and a thread that watches for newer.

A :class:`VersionHolder` polls ``latest()`` (the store's ``latest.json``) every
``poll_interval_s`` in a daemon thread. When it names another version, the thread loads it
(download, checksum verification, model load, precomputation and a probe, all done by the
``load`` callable, off the request path) and only then swaps the reference under a lock.
Readers take :attr:`current` once per batch and use that object to the end, so a request
in flight finishes on the version it started with while the next one gets the new version.
A version that fails is logged with why and skipped (at once when the failure is permanent,
e.g. a bad checksum; after ``max_attempts`` tries otherwise); the previous one keeps serving.

When ``latest()`` itself fails, the store's pointer cannot be followed and new versions stop
arriving. A permanent failure (garbage, empty or wrong-typed ``latest.json``, a traversal id,
a pointer to a missing version or to an invalid ``meta.json``) is a *pointer error* at once,
a transient one (store unreachable) after ``max_attempts`` checks in a row. The replica keeps
serving what it has (availability) and reports the error: it is listed under
:attr:`VersionHolder.skipped` as ``pointer_key`` and exposed as
:attr:`VersionHolder.pointer_error`, counted per check in :attr:`VersionHolder.error_counts`,
and logged once per distinct reason (not once per poll). It clears as soon as ``latest()``
answers again. None of this is persisted: a fresh holder over the same store meets the same
pointer error, or the same permanently bad latest version, at its first check.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from training.memory import release_memory

logger = logging.getLogger(__name__)

T = TypeVar("T")

POINTER_KEY = "latest.json"
MAX_REASON_CHARS = 300
# A remaining URL may carry an endpoint, a host or credentials: reasons are shown over HTTP.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """One loaded version: the object that serves it, its id and when it was swapped in."""

    value: T
    version: str
    loaded_at: str
    load_seconds: float


@dataclass(frozen=True)
class HolderHealth:
    """A consistent snapshot of what went wrong: ``skipped`` (key: version id, or
    ``pointer_key`` for the pointer), ``error_counts`` (same keys: failed load attempts of
    a version, or checks that met the pointer error) and the pointer error, if any."""

    skipped: dict[str, str]
    error_counts: dict[str, int]
    pointer_error: str | None


def describe_error(exc: BaseException, root: str = "") -> str:
    """``"ErrorType: message"`` fit to show: ``root`` (the store's URI) is cut from keys,
    other URLs are replaced by ``<url>``, whitespace is collapsed and the length bounded."""
    text = str(exc)
    if root:
        base = root.rstrip("/")
        text = text.replace(base + "/", "").replace(base, "<store>")
    text = _URL.sub("<url>", " ".join(text.split()))
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS - 3] + "..."
    return reason


class VersionHolder(Generic[T]):
    """Serves the newest loadable version of ``latest()``; see the module docstring."""

    def __init__(self, latest: Callable[[], str | None], load: Callable[[str], T], *,
                 poll_interval_s: float, max_attempts: int = 3,
                 permanent: tuple[type[BaseException], ...] = (), name: str = "model",
                 describe: Callable[[BaseException], str] = describe_error,
                 pointer_key: str = POINTER_KEY) -> None:
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
        self._describe = describe
        self.pointer_key = pointer_key
        self._failures: dict[str, int] = {}
        self._read_failures = 0  # transient latest() failures in a row
        self._pointer_logged: set[str] = set()  # reasons logged since the pointer broke
        self._state_lock = threading.Lock()
        # Mutated only under _state_lock; read whole through health().
        self.skipped: dict[str, str] = {}
        self.error_counts: dict[str, int] = {}

    # ---- reading (any thread) ---------------------------------------------------------------

    @property
    def current(self) -> Loaded[T] | None:
        """The version being served (None before the first load). Take it once per unit of
        work: a later read may return a newer version."""
        return self._current

    @property
    def poll_interval_s(self) -> float:
        return self._interval

    @property
    def pointer_error(self) -> str | None:
        """Why ``latest()`` cannot be followed now (None while it can)."""
        return self.skipped.get(self.pointer_key)

    def health(self) -> HolderHealth:
        with self._state_lock:
            return HolderHealth(dict(self.skipped), dict(self.error_counts),
                                self.skipped.get(self.pointer_key))

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

    def clear(self) -> None:
        """Stop serving any version (e.g. a canary that ended); the next check may load."""
        with self._swap_lock:
            previous, self._current = self._current, None
        if previous is not None:
            logger.info("%s: no longer serving %s", self.name, previous.version)
            del previous
            release_memory()

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
            except Exception as exc:  # keep serving whatever is loaded
                self._pointer_failed(exc)
                return False
            self._pointer_readable()
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
        reason = self._describe(exc)
        serving = self._current.version if self._current else None
        if isinstance(exc, self._permanent) or attempts >= self._max_attempts:
            with self._state_lock:
                self.skipped[version] = reason
                self.error_counts[version] = attempts
            self._failures.pop(version, None)
            logger.error("%s: skipping version %s (attempt %d): %s; still serving %s",
                         self.name, version, attempts, reason, serving)
        else:
            logger.warning("%s: loading version %s failed (attempt %d of %d): %s; still "
                           "serving %s", self.name, version, attempts, self._max_attempts,
                           reason, serving)

    def _pointer_failed(self, exc: Exception) -> None:
        reason = self._describe(exc)
        serving = self._current.version if self._current else None
        if not isinstance(exc, self._permanent):
            self._read_failures += 1
            if self._read_failures < self._max_attempts:  # maybe a blip: not an error yet
                logger.info("%s: cannot read %s (attempt %d of %d): %s; still serving %s",
                            self.name, self.pointer_key, self._read_failures,
                            self._max_attempts, reason, serving)
                return
        with self._state_lock:
            self.skipped[self.pointer_key] = reason
            self.error_counts[self.pointer_key] = self.error_counts.get(self.pointer_key, 0) + 1
        if reason in self._pointer_logged:
            return
        if len(self._pointer_logged) >= 64:  # reasons that never repeat must not pile up
            self._pointer_logged.clear()
        self._pointer_logged.add(reason)
        logger.warning("%s: %s cannot be followed: %s; still serving %s, no newer version "
                       "loads until it is fixed", self.name, self.pointer_key, reason, serving)

    def _pointer_readable(self) -> None:
        self._read_failures = 0
        if self.pointer_key not in self.skipped:
            return
        with self._state_lock:
            reason = self.skipped.pop(self.pointer_key)
            checks = self.error_counts.pop(self.pointer_key, 0)
        self._pointer_logged.clear()
        logger.info("%s: %s can be followed again after %d failed check(s) (was: %s)",
                    self.name, self.pointer_key, checks, reason)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._wake.wait(self._interval)
            self._wake.clear()
