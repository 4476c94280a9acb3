"""The checkpoint store against moto's S3 server through the real boto3 path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from training.store import S3Store, StoreConfigError, open_store
from training.store.conformance import CHECKS, Check, Tamper, check_retention

pytestmark = pytest.mark.integration


def _boto_tamper(store: S3Store, client: Any) -> Tamper:
    def tamper(key: str, data: bytes | None) -> None:
        full = f"{store.prefix}/{key}"
        if data is None:
            client.delete_object(Bucket=store.bucket, Key=full)
        else:
            client.put_object(Bucket=store.bucket, Key=full, Body=data)

    return tamper


@pytest.fixture
def s3_store(s3_bucket: str, moto_s3: str) -> Iterator[S3Store]:
    store = open_store(s3_bucket, endpoint_url=moto_s3)
    assert isinstance(store, S3Store)
    with store:
        yield store


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_s3_store_behaviour(check: Check, s3_store: S3Store, s3_client: Any,
                            tmp_path: Path) -> None:
    check(s3_store, _boto_tamper(s3_store, s3_client), tmp_path)


def test_listing_and_deleting_span_many_pages(s3_store: S3Store, s3_client: Any,
                                              tmp_path: Path) -> None:
    s3_store.page_size = 2
    s3_store.delete_batch = 2
    check_retention(s3_store, _boto_tamper(s3_store, s3_client), tmp_path)


def _round_trip(store: Any, client: Any, tmp_path: Path) -> None:
    info = store.publish({"model.safetensors": b"weights"}, {"window": 7}, None)
    assert store.latest().version == info.version
    store.load(info.version, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"weights"
    listed = client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "shopstream/ckpt/latest.json",
        f"shopstream/ckpt/versions/{info.version}/meta.json",
        f"shopstream/ckpt/versions/{info.version}/model.safetensors",
    ]


def test_endpoint_from_aws_endpoint_url_env(s3_bucket: str, moto_s3: str, s3_client: Any,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3)
    with open_store(s3_bucket) as store:
        assert isinstance(store, S3Store) and store.endpoint_url is None
        _round_trip(store, s3_client, tmp_path)


def test_explicit_endpoint_wins_over_env(s3_bucket: str, moto_s3: str, s3_client: Any,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with open_store(s3_bucket, endpoint_url=moto_s3) as store:
        _round_trip(store, s3_client, tmp_path)


def test_client_is_created_on_first_use_only(s3_bucket: str, moto_s3: str) -> None:
    store = open_store(s3_bucket, endpoint_url=moto_s3)
    assert isinstance(store, S3Store) and store._client is None
    assert store.latest() is None
    assert store._client is not None
    store.close()
    assert store._client is None


def test_missing_bucket_is_a_config_error(moto_s3: str) -> None:
    with open_store("s3://no-such-bucket-here/ckpt", endpoint_url=moto_s3) as store:
        with pytest.raises(StoreConfigError, match="no-such-bucket-here"):
            store.latest()


def test_versions_cli_lists_shows_diffs_rolls_back_and_promotes_on_s3(
        s3_store: S3Store, s3_bucket: str, moto_s3: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from training.store.versions import main

    v1 = s3_store.publish({"model.safetensors": b"one"}, {"window": "w1"}, None).version
    v2 = s3_store.publish({"model.safetensors": b"two"}, {"window": "w2"}, v1).version
    base = ["--store", s3_bucket, "--endpoint-url", moto_s3, "--json"]
    assert main([*base, "list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["status"]) for r in rows] == [(v1, "published"), (v2, "latest")]
    assert main([*base, "show", v2]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == {"model.safetensors": 3}
    assert main([*base, "diff", v1, v2]) == 0
    assert json.loads(capsys.readouterr().out) == []  # no metrics recorded in these two
    assert main([*base, "rollback"]) == 0
    assert json.loads(capsys.readouterr().out) == {"previous": v2, "latest": v1}
    assert s3_store.latest().version == v1  # type: ignore[union-attr]
    assert main([*base, "promote", v2]) == 0
    assert json.loads(capsys.readouterr().out) == {"previous": v1, "latest": v2}
