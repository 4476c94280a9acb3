"""The hot-swap holder with a fake store and loader: swap, skip, retry, poke, pointer errors
(no Ray). The same cases over a real local store are in test_serving_pointer_errors.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from serving.errors import VersionRejectedError
from serving.holder import MAX_REASON_CHARS, VersionHolder, describe_error

pytestmark = pytest.mark.unit


class FakeStore:
    """``latest`` and ``load`` callables; ``load`` fails as scripted per version."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.failures: dict[str, list[Exception]] = {}
        self.loads: list[str] = []
        self.latest_error: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()

    def latest(self) -> str | None:
        if self.latest_error is not None:
            raise self.latest_error
        return self.version

    def load(self, version: str) -> dict[str, str]:
        self.loads.append(version)
        self.gate.wait(5)
        pending = self.failures.get(version)
        if pending:
            raise pending.pop(0)
        return {"weights": version}


class BrokenPointer(ValueError):
    """Stands for the store's permanent errors (garbage latest.json, missing version...)."""


def holder(store: FakeStore, **kwargs: object) -> VersionHolder[dict[str, str]]:
    options: dict[str, object] = {"poll_interval_s": 60.0, "max_attempts": 3,
                                  "permanent": (VersionRejectedError, BrokenPointer),
                                  "name": "test"}
    options.update(kwargs)
    return VersionHolder(store.latest, store.load, **options)  # type: ignore[arg-type]


def test_empty_store_serves_nothing_then_the_first_version() -> None:
    store = FakeStore()
    h = holder(store)
    assert h.check() is False and h.current is None and store.loads == []
    store.version = "v1"
    assert h.check() is True
    assert h.current is not None and h.current.version == "v1"
    assert h.current.value == {"weights": "v1"} and h.current.loaded_at.endswith("+00:00")
    assert h.check() is False and store.loads == ["v1"]  # same version: no reload


def test_a_reader_keeps_the_object_it_took_while_newer_ones_swap_in() -> None:
    store = FakeStore()
    h = holder(store)
    store.version = "v1"
    h.check()
    taken = h.current
    store.version = "v2"
    h.check()
    assert taken is not None and taken.value == {"weights": "v1"}
    assert h.current is not None and h.current.version == "v2"


def test_the_swap_happens_only_after_the_load_completes() -> None:
    store = FakeStore()
    h = holder(store)
    store.version = "v1"
    h.check()
    store.version = "v2"
    store.gate.clear()
    loader = threading.Thread(target=h.check)
    loader.start()
    while store.loads[-1:] != ["v2"]:
        time.sleep(0.01)
    assert h.current is not None and h.current.version == "v1"  # still loading v2
    store.gate.set()
    loader.join(5)
    assert h.current is not None and h.current.version == "v2"


def test_a_permanently_bad_version_is_skipped_at_once_and_the_old_one_kept() -> None:
    store = FakeStore()
    h = holder(store)
    store.version = "v1"
    h.check()
    store.version = "v2"
    store.failures["v2"] = [VersionRejectedError("thresholds: review above decline")]
    assert h.check() is False
    assert h.skipped == {"v2": "VersionRejectedError: thresholds: review above decline"}
    assert h.error_counts == {"v2": 1} and h.pointer_error is None
    assert h.current is not None and h.current.version == "v1"
    h.check()
    assert store.loads == ["v1", "v2"]  # never retried
    store.version = "v3"
    assert h.check() is True and h.current is not None and h.current.version == "v3"


def test_a_transient_failure_is_retried_then_skipped_after_max_attempts() -> None:
    store = FakeStore()
    h = holder(store, max_attempts=3)
    store.version = "v1"
    store.failures["v1"] = [OSError("connection reset")]
    assert h.check() is False and h.skipped == {} and h.current is None
    assert h.check() is True and h.current is not None  # second try works
    store.version = "v2"
    store.failures["v2"] = [OSError("reset")] * 3
    for _ in range(3):
        h.check()
    assert h.skipped == {"v2": "OSError: reset"} and h.error_counts == {"v2": 3}
    assert store.loads == ["v1", "v1", "v2", "v2", "v2"]
    assert h.current.version == "v1"


def test_an_unreadable_store_keeps_the_current_version() -> None:
    store = FakeStore()
    h = holder(store)
    store.version = "v1"
    h.check()
    store.latest_error = ConnectionError("store unreachable")
    assert h.check() is False
    assert h.current is not None and h.current.version == "v1"
    assert h.skipped == {} and h.pointer_error is None  # one failed read is not an error yet


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "serving.holder" and r.levelno >= logging.WARNING]


def test_a_broken_pointer_is_listed_counted_logged_once_and_clears(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serving.holder")
    store = FakeStore()
    h = holder(store)
    store.version = "v1"
    h.check()
    store.latest_error = BrokenPointer("latest.json: not valid JSON")
    store.version = "v2"
    for _ in range(5):
        assert h.check() is False
    reason = "BrokenPointer: latest.json: not valid JSON"
    assert h.skipped == {"latest.json": reason} and h.error_counts == {"latest.json": 5}
    assert h.pointer_error == reason
    assert h.current is not None and h.current.version == "v1"  # still serving
    (warning,) = warnings_of(caplog)
    assert reason in warning and "still serving v1" in warning
    health = h.health()
    assert (health.skipped, health.error_counts, health.pointer_error) == (
        {"latest.json": reason}, {"latest.json": 5}, reason)
    store.latest_error = None
    assert h.check() is True and h.current.version == "v2"
    assert h.skipped == {} and h.error_counts == {} and h.pointer_error is None
    assert "can be followed again after 5 failed check(s)" in caplog.text
    assert store.loads == ["v1", "v2"]


def test_each_distinct_pointer_error_is_logged_once_per_breakage(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serving.holder")
    store = FakeStore()
    h = holder(store)
    for message in ("garbage", "empty", "garbage", "empty", "garbage"):
        store.latest_error = BrokenPointer(message)
        h.check()
    assert len(warnings_of(caplog)) == 2
    assert h.skipped == {"latest.json": "BrokenPointer: garbage"}
    assert h.error_counts == {"latest.json": 5}
    store.latest_error = None
    h.check()
    store.latest_error = BrokenPointer("garbage")  # broken again later: said again
    h.check()
    assert len(warnings_of(caplog)) == 3 and h.error_counts == {"latest.json": 1}


def test_transient_read_failures_become_a_pointer_error_after_max_attempts(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serving.holder")
    store = FakeStore()
    h = holder(store, max_attempts=3)
    store.version = "v1"
    h.check()
    store.latest_error = ConnectionError("store unreachable")
    h.check()
    h.check()
    assert h.pointer_error is None and warnings_of(caplog) == []
    for _ in range(4):
        h.check()
    assert h.pointer_error == "ConnectionError: store unreachable"
    assert h.error_counts == {"latest.json": 4} and len(warnings_of(caplog)) == 1
    store.latest_error = None
    h.check()
    assert h.pointer_error is None and h.skipped == {}
    store.latest_error = ConnectionError("store unreachable")
    h.check()  # the count of failures in a row started again
    assert h.pointer_error is None


def test_a_pointer_error_and_a_skipped_version_are_listed_side_by_side() -> None:
    store = FakeStore()
    h = holder(store)
    store.version = "v2"
    store.failures["v2"] = [VersionRejectedError("bad thresholds")]
    h.check()
    store.latest_error = BrokenPointer("bad version '../../etc'")
    h.check()
    assert h.skipped == {"v2": "VersionRejectedError: bad thresholds",
                         "latest.json": "BrokenPointer: bad version '../../etc'"}
    assert h.error_counts == {"v2": 1, "latest.json": 1} and h.current is None


def test_reasons_hide_the_store_uri_and_other_urls_and_stay_short() -> None:
    root = "s3://bucket/prefix"
    exc = OSError(f"{root}/latest.json names v1, but {root}/versions/v1/meta.json: missing")
    assert describe_error(exc, root) == \
        "OSError: latest.json names v1, but versions/v1/meta.json: missing"
    leak = ConnectionError('Could not connect to "http://user:secret@10.0.0.7:9000/b"\n x')
    assert describe_error(leak, root) == "ConnectionError: Could not connect to \"<url> x"
    assert describe_error(OSError(f"{root} is gone"), root) == "OSError: <store> is gone"
    assert describe_error(KeyError()) == "KeyError"
    long = describe_error(ValueError("x" * 1000))
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")


def test_the_watcher_thread_polls_and_a_poke_checks_at_once() -> None:
    store = FakeStore()
    h = holder(store, poll_interval_s=0.05)
    h.start()
    try:
        store.version = "v1"
        deadline = time.monotonic() + 5
        while h.current is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.current is not None and h.current.version == "v1"
        h.set_poll_interval(3600)
        time.sleep(0.2)  # the thread is now waiting an hour
        store.version = "v2"
        h.apply_user_config({"generation": 2})
        deadline = time.monotonic() + 5
        while h.current.version != "v2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.current.version == "v2" and h.poll_interval_s == 3600
    finally:
        h.stop()


@pytest.mark.parametrize(("user_config", "match"), [
    ({"poll_interval_s": "fast"}, "poll_interval_s"), ({"poll_interval_s": True}, "poll"),
    ({"poll_interval_s": 0}, "poll_interval_s"), ({"interval": 1}, "interval")])
def test_bad_user_config_is_refused_naming_the_key(user_config: dict[str, object],
                                                   match: str) -> None:
    h = holder(FakeStore())
    with pytest.raises(ValueError, match=match):
        h.apply_user_config(user_config)
    assert h.poll_interval_s == 60.0


def test_user_config_sets_the_interval() -> None:
    h = holder(FakeStore())
    h.apply_user_config({"poll_interval_s": 2})
    assert h.poll_interval_s == 2.0
