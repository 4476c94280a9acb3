"""A broken store pointer over a real local store (tiny model, no Ray): garbage, empty or
wrong-typed ``latest.json``, a traversal id, a pointer to a missing version and an invalid
``meta.json`` are listed under ``skipped["latest.json"]``, counted, logged once, keep the old
version serving, clear when the pointer is fixed, and are met again by a fresh replica."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.config import ServeConfig
from serving.holder import VersionHolder
from serving.loading import make_holder
from serving.predictor import Predictor
from serving.replica import ModelReplica
from tests.support.published import publish, shop_history, shop_model
from training.model import ModelConfig
from training.store import LocalStore

pytestmark = pytest.mark.unit

CFG = ModelConfig(encoder_init="tiny_random", dim=8, history_len=3)
MISSING = "v20990101T000000000000Z-deadbeef"
POLLS = 4

Breaker = Callable[[LocalStore, str, str], None]


@pytest.fixture(autouse=True)
def no_full_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full collection per swap is most of a tiny version's load time and not under test."""
    monkeypatch.setattr("serving.holder.release_memory", lambda: None)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with two published versions (latest: the second), copied by each test."""
    work = tmp_path_factory.mktemp("template")
    store = LocalStore(work / "store")
    model = shop_model(6, 8, CFG)
    v1 = publish(store, model, shop_history(model), work / "bundles")
    v2 = publish(store, model, shop_history(model), work / "bundles", parent=v1)
    return store.root, v1, v2


@pytest.fixture
def served(template: tuple[Path, str, str], tmp_path: Path) -> tuple[LocalStore, str, str]:
    """A private copy of the template store whose latest is v1."""
    root, v1, v2 = template
    store = LocalStore(shutil.copytree(root, tmp_path / "store"))
    store.promote(v1)
    return store, v1, v2


def config(store: LocalStore) -> ServeConfig:
    return ServeConfig(store=str(store.root), cache_dir="", poll_interval_s=60.0)


def fresh_holder(store: LocalStore) -> VersionHolder[Predictor]:
    return make_holder(config(store), "FraudScorer")


def write_latest(raw: bytes) -> Breaker:
    def breaker(store: LocalStore, v1: str, v2: str) -> None:
        (store.root / "latest.json").write_bytes(raw)

    return breaker


def write_meta(make: Callable[[LocalStore, str, str], bytes]) -> Breaker:
    def breaker(store: LocalStore, v1: str, v2: str) -> None:
        raw = make(store, v1, v2)
        store.promote(v2)
        (store.root / "versions" / v2 / "meta.json").write_bytes(raw)

    return breaker


def other_meta(store: LocalStore, v1: str, v2: str) -> bytes:
    return (store.root / "versions" / v1 / "meta.json").read_bytes()


BAD_JSON = "CheckpointCorruptError: {key}: not valid JSON ({why})"
CASES: dict[str, tuple[Breaker, str]] = {
    "binary garbage": (write_latest(b"\x00\xffnot json{"), BAD_JSON.format(
        key="latest.json", why="'utf-8' codec can't decode byte 0xff in position 1: invalid "
                               "start byte")),
    "text garbage": (write_latest(b"version=v1"), BAD_JSON.format(
        key="latest.json", why="Expecting value: line 1 column 1 (char 0)")),
    "empty": (write_latest(b""), BAD_JSON.format(
        key="latest.json", why="Expecting value: line 1 column 1 (char 0)")),
    "a list": (write_latest(b"[]"), "CheckpointCorruptError: latest.json: expected a JSON "
                                    "object, got list"),
    "a number": (write_latest(b'{"version": 5}'), "CheckpointCorruptError: latest.json: bad "
                                                  "version 5"),
    "traversal": (write_latest(b'{"version": "../../etc"}'),
                  "CheckpointCorruptError: latest.json: bad version '../../etc'"),
    "missing version": (write_latest(json.dumps({"version": MISSING}).encode()),
                        f"CheckpointMissingError: latest.json names {MISSING}, but "
                        f"versions/{MISSING}/meta.json: missing"),
    "garbage meta": (write_meta(lambda *_: b"{nope"), BAD_JSON.format(
        key="versions/{v2}/meta.json",
        why="Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")),
    "another version's meta": (write_meta(other_meta), "CheckpointCorruptError: versions/{v2}/"
                                                       "meta.json: records version '{v1}', "
                                                       "expected '{v2}'"),
}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "serving.holder" and r.levelno >= logging.WARNING]


def assert_pointer_error(h: VersionHolder[Predictor], reason: str, checks: int) -> None:
    assert h.skipped == {"latest.json": reason}
    assert h.error_counts == {"latest.json": checks}
    assert h.pointer_error == reason


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_pointer_keeps_serving_is_reported_once_and_recovers(
        case: str, served: tuple[LocalStore, str, str], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    store, v1, v2 = served
    breaker, template = CASES[case]
    reason = template.format(v1=v1, v2=v2)
    good_meta = (store.root / "versions" / v2 / "meta.json").read_bytes()
    h = fresh_holder(store)
    assert h.check() is True and h.current is not None and h.current.version == v1
    caplog.set_level(logging.INFO, logger="serving.holder")
    breaker(store, v1, v2)
    for _ in range(POLLS):
        assert h.check() is False
    assert_pointer_error(h, reason, POLLS)
    assert h.current.version == v1  # availability: the old version keeps serving
    (warning,) = warnings_of(caplog)
    assert reason in warning
    assert str(tmp_path) not in reason and "file:" not in reason  # no store location

    (store.root / "versions" / v2 / "meta.json").write_bytes(good_meta)
    store.promote(v2)
    assert h.check() is True and h.current.version == v2
    assert h.skipped == {} and h.error_counts == {} and h.pointer_error is None
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize("case", ["binary garbage", "traversal", "missing version", "garbage meta"])
def test_a_fresh_holder_over_a_broken_pointer_reports_it_at_its_first_check(
        case: str, served: tuple[LocalStore, str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    store, v1, v2 = served
    breaker, template = CASES[case]
    breaker(store, v1, v2)
    caplog.set_level(logging.INFO, logger="serving.holder")
    h = fresh_holder(store)
    assert h.check() is False and h.current is None
    assert_pointer_error(h, template.format(v1=v1, v2=v2), 1)
    assert len(warnings_of(caplog)) == 1


def corrupt_a_file(store: LocalStore, version: str) -> None:
    """Same size, other bytes: only the checksum can tell."""
    folder = store.root / "versions" / version
    target = max((p for p in folder.iterdir() if p.name != "meta.json"),
                 key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def test_a_version_failing_verification_is_skipped_once_and_again_by_a_fresh_holder(
        served: tuple[LocalStore, str, str], caplog: pytest.LogCaptureFixture) -> None:
    store, v1, v2 = served
    h = fresh_holder(store)
    h.check()
    caplog.set_level(logging.INFO, logger="serving.holder")
    corrupt_a_file(store, v2)
    store.promote(v2)
    for _ in range(POLLS):
        assert h.check() is False
    (reason,) = h.skipped.values()
    assert list(h.skipped) == [v2] and reason.startswith("CheckpointCorruptError: versions/")
    assert "sha256" in reason and h.error_counts == {v2: 1} and h.pointer_error is None
    assert h.current is not None and h.current.version == v1
    assert len(warnings_of(caplog)) == 1

    again = fresh_holder(store)  # a restarted replica recomputes the same entry
    assert again.check() is False and again.current is None
    assert again.skipped == {v2: reason} and again.error_counts == {v2: 1}


def test_replica_status_lists_the_pointer_error_and_stays_ready_while_serving(
        served: tuple[LocalStore, str, str]) -> None:
    store, v1, v2 = served
    reason = CASES["empty"][1]
    replica = ModelReplica(config(store), "FraudScorer")
    replica.holder.stop()  # its watcher's first check is done: the counts below are exact
    write_latest(b"")(store, v1, v2)
    replica.holder.check()
    status = replica.status()
    assert status.ready is True and status.version == v1  # serving, but degraded:
    assert status.skipped == {"latest.json": reason} and status.pointer_error == reason
    assert status.error_counts == {"latest.json": 1}

    restarted = ModelReplica(config(store), "FraudScorer")
    restarted.holder.stop()
    status = restarted.status()
    assert status.ready is False and status.version is None
    assert status.skipped == {"latest.json": reason}
    assert status.pointer_error == reason
