"""The checkpoint store on a local directory: the shared behaviour checks plus local specifics."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from training.store import (
    CheckpointMissingError,
    ConcurrentPublishError,
    LocalStore,
    VersionInfo,
    open_store,
)
from training.store.conformance import CHECKS, Check, Tamper

pytestmark = pytest.mark.unit


def _file_tamper(store: LocalStore) -> Tamper:
    def tamper(key: str, data: bytes | None) -> None:
        path = store.root / key
        if data is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return tamper


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_local_store_behaviour(check: Check, tmp_path: Path) -> None:
    with LocalStore(tmp_path / "store") as store:
        check(store, _file_tamper(store), tmp_path / "work")


def test_opening_creates_nothing_until_a_write(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    assert store.latest() is None and store.list_versions() == []
    assert store.get_config("x") is None
    assert not (tmp_path / "store").exists()


def test_publish_leaves_only_final_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "model.safetensors"
    src.write_bytes(b"m" * 3000)
    info = store.publish({"model.safetensors": src}, {}, None)
    on_disk = sorted(p.relative_to(store.root).as_posix()
                     for p in store.root.rglob("*") if p.is_file())
    assert on_disk == [".latest.json.lock", "latest.json", f"versions/{info.version}/meta.json",
                       f"versions/{info.version}/model.safetensors"]
    assert store.uri == store.root.as_uri()


def test_bad_sources_fail_before_any_write(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(CheckpointMissingError, match="model.safetensors"):
        store.publish({"model.safetensors": tmp_path / "absent"}, {}, None)
    with pytest.raises(TypeError, match="model.safetensors"):
        store.publish({"model.safetensors": "a str is neither"}, {}, None)  # type: ignore[dict-item]
    assert not (tmp_path / "store").exists()


def test_load_writes_meta_json_matching_read_meta(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    info = store.publish({"a.bin": b"1"}, {"note": "x"}, None)
    store.load(info.version, tmp_path / "out")
    import json

    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == store.read_meta(
        info.version)


def test_two_threads_publishing_at_once_have_one_winner(tmp_path: Path) -> None:
    # Both read latest.json and upload, then meet at the barrier and write latest.json at
    # the same moment: the file lock lets exactly one through, the other loses cleanly.
    store = LocalStore(tmp_path / "store")
    v0 = store.publish({"m": b"0"}, {}, None)
    barrier = threading.Barrier(2, timeout=30)
    store._before_promote = lambda info: barrier.wait()  # type: ignore[method-assign]
    outcomes: list[VersionInfo | Exception] = []

    def publish(tag: bytes) -> None:
        try:
            outcomes.append(store.publish({"m": tag}, {}, v0.version, expect_latest=v0.version))
        except ConcurrentPublishError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=publish, args=(t,)) for t in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    won = [o for o in outcomes if isinstance(o, VersionInfo)]
    lost: list[Any] = [o for o in outcomes if isinstance(o, ConcurrentPublishError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    latest = store.latest()
    assert latest is not None and latest.version == won[0].version
    assert len(store.list_versions()) == 3  # v0, the winner, and the kept loser
