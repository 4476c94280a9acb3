"""The hot-swap holder with a fake store and loader: swap, skip, retry, poke (no Ray)."""

from __future__ import annotations

import threading
import time

import pytest

from serving.errors import VersionRejectedError
from serving.holder import VersionHolder

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


def holder(store: FakeStore, **kwargs: object) -> VersionHolder[dict[str, str]]:
    options: dict[str, object] = {"poll_interval_s": 60.0, "max_attempts": 3,
                                  "permanent": (VersionRejectedError,), "name": "test"}
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
    assert h.skipped == {"v2": "OSError: reset"}
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
