"""Key validation, version ids, URI dispatch and the store config."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from training.cli import ConfigError
from training.store import (
    CheckpointCorruptError,
    CheckpointMissingError,
    InvalidKeyError,
    InvalidMetaError,
    LocalStore,
    S3Store,
    StoreConfig,
    StoreConfigError,
    StoreError,
    keys,
    new_version_id,
    open_store,
    validate_key,
    validate_version,
    version_time,
)
from training.store.conformance import BAD_KEYS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError, match=re.escape(repr(key))):
        validate_key(key)


@pytest.mark.parametrize("key", ["model.safetensors", "shards/0-of-2.bin", "a_b/C.d-e", ".x"])
def test_good_keys_pass(key: str) -> None:
    assert validate_key(key) == key


def test_version_ids_sort_by_time_and_never_collide() -> None:
    ids = [new_version_id()[0] for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"v\d{8}T\d{12}Z-[0-9a-f]{8}", v) for v in ids)


def test_version_id_encodes_its_time_and_survives_a_clock_step_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The process-wide "last id" floor is restored afterwards, or later ids would be from 2040.
    monkeypatch.setattr(keys, "_last_time", None)
    now = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    first, stamp = new_version_id(now=now)
    assert first.startswith("v20310506T070809123456Z-") and stamp == now
    assert version_time(first) == now
    second, stamp2 = new_version_id(now=now - timedelta(hours=1))
    assert second > first and stamp2 == now + timedelta(microseconds=1)
    later = "v20400101T000000000000Z-00000000"
    third, stamp3 = new_version_id(after=later)
    assert third > later and stamp3 == datetime(2040, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["latest", "v2026-01-01", "v20310506T070809123456Z-ABCDEF12",
                                  "v20310506T070809123456Z-0000000", "../v1"])
def test_bad_version_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidKeyError, match="version"):
        validate_version(text)


def test_errors_share_a_base() -> None:
    for cls in (CheckpointCorruptError, CheckpointMissingError, InvalidKeyError,
                InvalidMetaError, StoreConfigError):
        assert issubclass(cls, StoreError)
    assert issubclass(StoreConfigError, ConfigError)


def test_open_store_picks_backend_from_uri(tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "a"))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "a"
    as_path = open_store(tmp_path / "a")
    assert isinstance(as_path, LocalStore) and as_path.uri == local.uri
    from_uri = open_store((tmp_path / "b c").as_uri())
    assert isinstance(from_uri, LocalStore) and from_uri.root == tmp_path / "b c"
    s3 = open_store("s3://my-bucket/shop/ckpt/", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.uri) == ("my-bucket", "shop/ckpt", "s3://my-bucket/shop/ckpt")
    assert s3.endpoint_url == "http://127.0.0.1:1" and s3._client is None
    assert open_store("s3://my-bucket").uri == "s3://my-bucket"


@pytest.mark.parametrize("uri", ["gs://bucket/x", "http://host/x", "s3://Bad_Bucket/x",
                                 "s3://bucket/a/../b", "s3://bucket/x?versionId=1",
                                 "file://host/x", ""])
def test_unusable_uris_name_the_uri(uri: str) -> None:
    with pytest.raises(StoreConfigError, match=re.escape(repr(uri))):
        open_store(uri)


def test_endpoint_only_for_s3(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="endpoint_url"):
        open_store(str(tmp_path), endpoint_url="http://127.0.0.1:1")


def test_store_config() -> None:
    cfg = StoreConfig()
    assert (cfg.uri, cfg.endpoint_url, cfg.keep_last) == ("runs/store", None, 5)
    assert all(f.metadata["help"] for f in dataclasses.fields(StoreConfig))
    assert isinstance(StoreConfig(uri="s3://bucket/p", endpoint_url="http://x").open(), S3Store)
    with pytest.raises(ConfigError, match="keep_last"):
        StoreConfig(keep_last=0)
    with pytest.raises(ConfigError, match="endpoint_url"):
        StoreConfig(uri="/tmp/x", endpoint_url="http://x")
    with pytest.raises(ConfigError, match="uri"):
        StoreConfig(uri=" ")


def test_version_ids_made_after_the_clock_test_are_current() -> None:
    version, stamp = new_version_id()
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(minutes=1), version
