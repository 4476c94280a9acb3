"""The checkpoint store on a local directory: the shared behaviour checks plus local specifics."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.store import CheckpointMissingError, LocalStore, open_store
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
    assert on_disk == ["latest.json", f"versions/{info.version}/meta.json",
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
