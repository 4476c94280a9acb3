"""Checkpoint store under an S3 prefix (AWS, MinIO, moto's server: anything S3-compatible).

The boto3 client is made on first use, from the standard credential chain; the endpoint
is the explicit ``endpoint_url`` if given, else boto3's own ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` / config-file lookup, else AWS. Credentials are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from training.store.base import CheckpointStore
from training.store.errors import (
    CheckpointMissingError,
    ConcurrentPublishError,
    StoreConfigError,
    StoreError,
)
from training.store.meta import CHUNK

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# A conditional write that lost: the object changed (412) or a concurrent conditional
# write to it is in flight (409).
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class S3Store(CheckpointStore):
    """Objects are ``<prefix>/<key>`` in ``bucket``; S3's PUT is atomic per object, and a
    conditional PUT (``If-Match`` / ``If-None-Match``, AWS since 2024, MinIO, moto) is
    atomic with its check. A service that ignores those headers makes the write
    unconditional: one publisher per store there."""

    # S3's own maxima; instances may lower them (tests do, to exercise the batching).
    page_size = 1000
    delete_batch = 1000

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use."""
        if self._client is None:
            import boto3  # deferred: importing the store must stay cheap and offline
            from botocore.config import Config

            endpoint = self.endpoint_url
            # Path-style addressing for custom endpoints: MinIO and moto serve buckets on
            # paths, not on DNS names like bucket.127.0.0.1.
            custom = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") \
                or os.environ.get("AWS_ENDPOINT_URL")
            config = Config(retries={"mode": "standard"},
                            s3={"addressing_style": "path"} if custom else None)
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, config=config)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, op: str, key: str, exc: Exception) -> StoreError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING_CODES:
                return CheckpointMissingError(f"{self._location(key)}: missing")
            if code == "NoSuchBucket":
                return StoreConfigError(f"{self.uri}: bucket {self.bucket!r} does not exist")
            return StoreError(f"{self._location(key)}: {op} failed: {code} "
                              f"{error.get('Message', '')}".rstrip())
        return StoreError(f"{self._location(key)}: {op} failed: {type(exc).__name__}: {exc}")

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(op, key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as fh:
            self._call("put_object", key, Key=self._key(key), Body=fh)

    def iter_object(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        body = self._call("get_object", key, Key=self._key(key))["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("get_object", key, exc) from exc
        finally:
            body.close()

    def list_keys(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        strip = len(self._key(""))
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": self.page_size})
            for page in pages:
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list_objects_v2", prefix, exc) from exc
        return sorted(keys)

    def delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), self.delete_batch):
            batch = keys[start:start + self.delete_batch]
            objects = [{"Key": self._key(k)} for k in batch]
            reply = self._call("delete_objects", batch[0],
                               Delete={"Objects": objects, "Quiet": True})
            errors = reply.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(f"{self.uri}: delete_objects failed for {len(errors)} key(s), "
                                 f"first {first.get('Key')!r}: {first.get('Code')}")

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self._call("get_object", key, Key=self._key(key))
        except CheckpointMissingError:
            return None
        try:
            return reply["Body"].read(), str(reply["ETag"])
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("get_object", key, exc) from exc
        finally:
            reply["Body"].close()

    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   **condition)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _CONFLICT_CODES:
                raise ConcurrentPublishError(
                    f"{self._location(key)} changed since it was read") from exc
            raise self._fail("put_object", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("put_object", key, exc) from exc
