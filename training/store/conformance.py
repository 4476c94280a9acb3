"""Behaviour every :class:`CheckpointStore` backend must show, as plain check functions.

The unit tests run them on a :class:`LocalStore`, the integration tests on an
:class:`S3Store` against moto's server; they also serve to smoke-test a real bucket.
Each check takes a fresh, empty store, a ``tamper(key, data)`` callable that overwrites
(``data`` bytes) or deletes (``None``) the object at ``key`` behind the store's back,
and a scratch directory. Failures raise AssertionError (explicitly, so ``-O`` keeps them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from training.cli import ConfigError
from training.store.base import CheckpointStore
from training.store.errors import (
    CheckpointCorruptError,
    CheckpointMissingError,
    ConcurrentPublishError,
    InvalidKeyError,
    InvalidMetaError,
)
from training.store.keys import version_time
from training.store.title_vectors import title_key

Tamper = Callable[[str, "bytes | None"], None]
Check = Callable[[CheckpointStore, Tamper, Path], None]

# Keys that must be refused: traversal, absolute, backslash, empty/dot segments, odd chars.
BAD_KEYS: tuple[str, ...] = ("../evil", "a/../b", "a..b", "/abs", "a\\b", "a//b", "a/", "",
                             ".", "a/./b", "a b", "m\u00f6del", "x?y", "~/x", "c:")
MODEL = bytes(range(256)) * 40  # 10240 bytes


class InjectedFailure(RuntimeError):
    """Raised by the checks' fault injection; never by the store itself."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _raises(exc_type: type[Exception], fn: Callable[[], object], *needles: str) -> Exception:
    try:
        fn()
    except exc_type as exc:
        for needle in needles:
            _expect(needle in str(exc), f"{exc_type.__name__} {str(exc)!r} lacks {needle!r}")
        return exc
    raise AssertionError(f"expected {exc_type.__name__}")


@contextmanager
def _patched(store: CheckpointStore, name: str, replacement: Any) -> Iterator[None]:
    setattr(store, name, replacement)
    try:
        yield
    finally:
        delattr(store, name)


def _latest_version(store: CheckpointStore) -> str | None:
    info = store.latest()
    return None if info is None else info.version


def _files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def check_round_trip(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    _expect(store.latest() is None and store.list_versions() == [], "new store not empty")
    src = workdir / "src" / "model.safetensors"
    src.parent.mkdir(parents=True)
    src.write_bytes(MODEL)
    v1 = store.publish({"model.safetensors": src, "replay.parquet": b"replay-1"},
                       {"window": 1, "metrics": {"auc": 0.75}}, None)
    _expect(_latest_version(store) == v1.version, "latest is not the first publish")
    _expect(v1.files["model.safetensors"].size == 10240, "model size")
    _expect(v1.files["model.safetensors"].sha256 == hashlib.sha256(MODEL).hexdigest(), "sha")
    v2 = store.publish({"model.safetensors": b"model-2", "nested/opt.safetensors": b"opt-2"},
                       {"window": 2}, v1.version)
    _expect(store.list_versions() == [v1.version, v2.version], "list_versions")
    latest = store.latest()
    _expect(latest is not None and latest.version == v2.version
            and latest.parent == v1.version, "latest after second publish")
    meta = store.read_meta(v1.version)
    _expect(meta == {
        "window": 1, "metrics": {"auc": 0.75}, "version": v1.version, "parent": None,
        "status": "published", "created_at": v1.created_at,
        "files": {"model.safetensors": {"sha256": hashlib.sha256(MODEL).hexdigest(),
                                        "size": 10240},
                  "replay.parquet": {"sha256": hashlib.sha256(b"replay-1").hexdigest(),
                                     "size": 8}}}, f"meta.json of v1: {meta}")
    _expect(datetime.fromisoformat(v1.created_at) == version_time(v1.version), "created_at")
    store.load(v1.version, workdir / "out1")
    got = _files_under(workdir / "out1")
    _expect(sorted(got) == ["meta.json", "model.safetensors", "replay.parquet"], f"{sorted(got)}")
    _expect(got["model.safetensors"] == MODEL and got["replay.parquet"] == b"replay-1", "bytes")
    info = store.load(v2.version, workdir / "out2")
    _expect(info.user_meta == {"window": 2}, "user_meta")
    _expect(_files_under(workdir / "out2")["nested/opt.safetensors"] == b"opt-2", "nested")
    unknown = "v20000101T000000000000Z-00000000"
    _raises(CheckpointMissingError, lambda: store.publish({}, {}, unknown), unknown)
    _raises(CheckpointMissingError, lambda: store.read_meta(unknown), unknown)
    _raises(InvalidMetaError, lambda: store.publish({}, {"version": "x"}, None), "version")
    _expect(store.list_versions() == [v1.version, v2.version], "failed publishes left traces")


def check_ordering(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    made: list[str] = []
    for i in range(20):
        made.append(store.publish({"w.bin": bytes([i])}, {"i": i}, made[-1] if made else None)
                    .version)
    _expect(len(set(made)) == 20, "version ids collided")
    _expect(made == sorted(made) == store.list_versions(), f"not time-ordered: {made}")
    times = [datetime.fromisoformat(store.read_meta(v)["created_at"]) for v in made]
    _expect(all(a < b for a, b in zip(times, times[1:])), "created_at not increasing")
    _expect(times == [version_time(v) for v in made], "lexical order != time order")
    _expect(_latest_version(store) == made[-1], "latest is not the newest publish")


def check_retention(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    chain: list[str] = []
    for i in range(5):
        files = {"w.bin": bytes([i]), "extra/a.bin": b"a", "extra/b.bin": b"b"}
        chain.append(store.publish(files, {}, chain[-1] if chain else None).version)
    store.promote(chain[1])  # roll back: latest and its parent are now the oldest two
    stale = "v20000101T000000000000Z-0000beef"  # an interrupted publish: no meta.json
    tamper(f"versions/{stale}/w.bin", b"partial")
    _raises(ConfigError, lambda: store.retain(0), "keep_last")
    deleted = store.retain(keep_last=1)
    _expect(deleted == [stale, chain[2], chain[3]], f"deleted {deleted}")
    _expect(store.list_versions() == [chain[0], chain[1], chain[4]], "kept wrong versions")
    _expect(_latest_version(store) == chain[1], "retain moved latest")
    kept = [chain[0], chain[1], chain[4]]
    _expect(store.list_keys("versions/") == sorted(
        f"versions/{v}/{n}" for v in kept
        for n in ("meta.json", "w.bin", "extra/a.bin", "extra/b.bin")), "objects left behind")
    for version, byte in ((chain[0], 0), (chain[1], 1), (chain[4], 4)):
        out = workdir / version
        store.load(version, out)
        _expect((out / "w.bin").read_bytes() == bytes([byte]), f"{version} content")
    _raises(CheckpointMissingError, lambda: store.read_meta(chain[2]), chain[2])
    rejected = [store.record_rejected({}, {}, chain[1], reason=f"r{i}").version
                for i in range(3)]
    _expect(store.retain(keep_last=2) == [rejected[0]], "rejected retention")
    _expect(store.list_rejected() == rejected[1:], "rejected kept")
    _expect(store.list_versions() == [chain[0], chain[1], chain[4]], "second retain")


def _fail_on(method: Callable[[str, Any], None], suffix: str,
             damage: bool = False) -> Callable[[str, Any], None]:
    """Wrap a ``_put_*`` method: keys ending in ``suffix`` fail, or (``damage``) are stored
    one byte short, as a faulty transfer would."""
    def wrapper(key: str, data: Any) -> None:
        if not key.endswith(suffix):
            method(key, data)
        elif damage:
            method(key, data[:-1])
        else:
            raise InjectedFailure(key)
    return wrapper


def check_atomic_publish(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    v1 = store.publish({"model.safetensors": b"good", "replay.parquet": b"r1"}, {}, None)

    def fail(*args: Any) -> None:
        raise InjectedFailure("injected")

    points = {
        "before latest.json": ("_before_promote", fail, InjectedFailure),
        "meta.json upload": ("put_bytes", _fail_on(store.put_bytes, "meta.json"),
                             InjectedFailure),
        "file upload": ("put_bytes", _fail_on(store.put_bytes, "replay.parquet"),
                        InjectedFailure),
        "damaged upload": ("put_bytes", _fail_on(store.put_bytes, "replay.parquet", True),
                           CheckpointCorruptError)}
    for point, (name, replacement, error) in points.items():
        with _patched(store, name, replacement):
            _raises(error, lambda: store.publish(
                {"model.safetensors": b"bad", "replay.parquet": b"r2"}, {}, v1.version))
        _expect(_latest_version(store) == v1.version, f"latest moved ({point})")
        _expect(store.list_versions() == [v1.version], f"partial version listed ({point})")
        _expect(store.list_keys("versions/") == sorted(
            f"versions/{v1.version}/{n}" for n in ("meta.json", "model.safetensors",
                                                   "replay.parquet")), f"leftovers ({point})")
    # A hard crash skips the clean-up: the partial version stays but is not listed.
    with _patched(store, "_discard", lambda prefix: None), \
            _patched(store, "put_bytes", _fail_on(store.put_bytes, "meta.json")):
        _raises(InjectedFailure, lambda: store.publish({"model.safetensors": b"x"}, {}, None))
    _expect(store.list_versions() == [v1.version], "crashed publish listed")
    store.load(v1.version, workdir / "after")
    _expect((workdir / "after" / "model.safetensors").read_bytes() == b"good", "v1 intact")
    v2 = store.publish({"model.safetensors": b"next"}, {}, v1.version)
    _expect(_latest_version(store) == v2.version, "store unusable after failures")


def check_load_detects_tampering(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    v1 = store.publish({"model.safetensors": MODEL, "optimizer.safetensors": b"opt"}, {}, None)
    key = f"versions/{v1.version}/model.safetensors"
    flipped = bytearray(MODEL)
    flipped[5000] ^= 0xFF
    cases = ((MODEL[:-100], CheckpointCorruptError, "10140 bytes, expected 10240"),
             (bytes(flipped), CheckpointCorruptError, "sha256"),
             (None, CheckpointMissingError, "missing"))
    for i, (data, error, needle) in enumerate(cases):
        tamper(key, data)
        out = workdir / f"out{i}"
        _raises(error, partial(store.load, v1.version, out), key, needle)
        _expect(not (out / "model.safetensors").exists()
                and not (out / "optimizer.safetensors").exists(), "failed load left files")
        _expect(_latest_version(store) == v1.version, "latest changed")
    tamper(key, MODEL)
    store.load(v1.version, workdir / "ok")
    _expect((workdir / "ok" / "model.safetensors").read_bytes() == MODEL, "restored load")


def check_broken_metadata(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    v1 = store.publish({"model.safetensors": b"m"}, {}, None)
    meta_key = f"versions/{v1.version}/meta.json"
    good = store.read_meta(v1.version)
    other = "v20000101T000000000000Z-00000000"
    bad_docs = (({**good, "version": other}, "records version"),
                ({**good, "files": {"../x": good["files"]["model.safetensors"]}}, "'..'"),
                ({**good, "files": {"model.safetensors": {"sha256": "ab", "size": 1}}},
                 "bad entry"),
                ({**good, "status": "rejected"}, "status"))
    for doc, needle in bad_docs:
        tamper(meta_key, json.dumps(doc).encode())
        _raises(CheckpointCorruptError, store.latest, meta_key, needle)
    tamper(meta_key, b"{not json")
    _raises(CheckpointCorruptError, partial(store.load, v1.version, workdir), meta_key, "JSON")
    tamper(meta_key, None)
    _raises(CheckpointMissingError, store.latest, "latest.json", meta_key)
    tamper("latest.json", b'{"version": "../../etc"}')
    _raises(CheckpointCorruptError, store.latest, "latest.json")
    v2 = store.publish({"model.safetensors": b"m2"}, {}, None)  # publishing repairs latest
    _expect(_latest_version(store) == v2.version, "publish over a broken latest.json")


def check_rejected(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    v1 = store.publish({"model.safetensors": b"good"}, {"window": 1}, None)
    rej = store.record_rejected({"model.safetensors": b"worse"}, {"window": 2}, v1.version,
                                reason="auc fell 0.75 -> 0.60", metrics={"auc": 0.6})
    _expect(rej.status == "rejected" and rej.version > v1.version, "rejected info")
    _expect(_latest_version(store) == v1.version, "rejected candidate moved latest")
    _expect(store.list_versions() == [v1.version], "rejected listed as published")
    _expect(store.list_rejected() == [rej.version], "rejected not recorded")
    meta = store.read_meta(rej.version)
    _expect(meta["rejection"] == {"reason": "auc fell 0.75 -> 0.60", "metrics": {"auc": 0.6}}
            and meta["status"] == "rejected" and meta["window"] == 2, f"{meta}")
    store.load(rej.version, workdir / "rej")
    _expect((workdir / "rej" / "model.safetensors").read_bytes() == b"worse", "rejected load")
    _raises(CheckpointMissingError, lambda: store.promote(rej.version), rej.version)
    _raises(InvalidMetaError, lambda: store.record_rejected({}, {}, None, reason=" "), "reason")
    _raises(InvalidMetaError, lambda: store.record_rejected(
        {}, {}, None, reason="nan", metrics={"loss": float("nan")}), "JSON")
    _expect(store.list_rejected() == [rej.version], "failed record left a trace")
    verdict = store.record_rejected({}, {}, v1.version, reason="loss diverged",
                                    metrics={"loss": None})
    store.load(verdict.version, workdir / "verdict")
    _expect(sorted(_files_under(workdir / "verdict")) == ["meta.json"], "verdict-only load")
    _expect(store.list_rejected() == [rej.version, verdict.version], "verdict not recorded")
    v2 = store.publish({"model.safetensors": b"better"}, {}, v1.version)
    _expect(_latest_version(store) == v2.version and v2.version > verdict.version, "publish")


def check_configs(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    _expect(store.get_config("train") is None, "config before put")
    store.put_config("train", {"lr": 0.001, "layers": [64, 32], "name": "base"})
    _expect(store.get_config("train") == {"lr": 0.001, "layers": [64, 32], "name": "base"}, "rt")
    store.put_config("train", {"lr": 0.01})
    _expect(store.get_config("train") == {"lr": 0.01}, "overwrite")
    store.put_config("sweeps/run-1", {"trial": 3})
    _expect(store.get_config("sweeps/run-1") == {"trial": 3}, "nested config")
    # Read back in the order written, nested dicts too (a resumed pipeline run's report
    # follows its saved methods, phases and metrics in that order).
    ordered = {"zeta": {"prepare": 1, "fit": 2, "gate": 3}, "alpha": [{"b": 1, "a": 2}]}
    store.put_config("ordered", ordered)
    back = store.get_config("ordered") or {}
    _expect(list(back) == ["zeta", "alpha"] and list(back["zeta"]) == ["prepare", "fit", "gate"]
            and list(back["alpha"][0]) == ["b", "a"], "config key order")
    _raises(InvalidKeyError, lambda: store.put_config("../escape", {}), "../escape")
    _raises(InvalidMetaError, lambda: store.put_config("bad", {"x": float("inf")}), "JSON")
    tamper("configs/broken.json", b"[1, 2]")
    _raises(CheckpointCorruptError, lambda: store.get_config("broken"), "configs/broken.json")


def check_title_vectors(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    _expect(store.get_title_vectors("ab12") == {}, "title vectors before put")
    vectors = {"Tasse \u00e0 th\u00e9": np.arange(4, dtype=np.float32),
               "mug": np.full(4, -1.5, dtype=np.float32)}
    store.put_title_vectors("ab12", vectors)
    back = store.get_title_vectors("ab12")
    _expect(list(back) == list(vectors)
            and all(np.array_equal(back[t], v) for t, v in vectors.items()), "title vectors rt")
    store.put_title_vectors("ab12", {"mug": np.zeros(4, dtype=np.float32)})
    _expect(list(store.get_title_vectors("ab12")) == ["mug"], "title vectors overwrite")
    tamper(title_key("ab12"), b"not safetensors")
    _expect(store.get_title_vectors("ab12") == {}, "damaged title vectors must read as none")
    _raises(InvalidKeyError, lambda: store.put_title_vectors("../x", {}), "../x")
    _expect(store.latest() is None and store.list_versions() == [], "title vectors published")


def check_key_validation(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    for bad in BAD_KEYS:
        _raises(InvalidKeyError, partial(store.publish, {bad: b"x"}, {}, None), repr(bad))
        _raises(InvalidKeyError, partial(store.get_config, bad))
    _raises(InvalidKeyError, lambda: store.publish({"meta.json": b"x"}, {}, None), "reserved")
    _raises(InvalidKeyError, lambda: store.publish({"a": b"1", "a/b": b"2"}, {}, None), "folder")
    _raises(InvalidKeyError, lambda: store.read_meta("../v1"), "version")
    _raises(InvalidKeyError, lambda: store.load("latest", workdir), "version")
    _expect(store.latest() is None and store.list_keys("versions/") == [], "bad keys wrote")


def check_racing_publishers(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    """The losing interleaving of two publishers, made deterministic: B publishes (and
    wins) while A sits between its read of latest.json and its write of it."""
    v0 = store.publish({"model.safetensors": b"v0"}, {}, None)
    winner: list[str] = []

    def b_publishes_now(info: Any) -> None:
        if not winner:  # B's own publish passes through this hook too
            winner.append("busy")
            winner[0] = store.publish({"model.safetensors": b"b"}, {"who": "b"},
                                      v0.version).version

    with _patched(store, "_before_promote", b_publishes_now):
        err = _raises(ConcurrentPublishError, lambda: store.publish(
            {"model.safetensors": b"a"}, {"who": "a"}, v0.version), "latest.json",
            "kept under versions/")
    _expect(_latest_version(store) == winner[0], "the loser moved latest")
    (loser,) = [v for v in store.list_versions() if v not in (v0.version, winner[0])]
    _expect(loser in str(err) and store.read_meta(loser)["who"] == "a", "loser not kept")
    store.load(loser, workdir / "loser")  # nothing lost: complete and verified
    # Gating against a version that is no longer latest fails the same way, and a caller
    # that knows what is latest can still promote the kept version.
    _raises(ConcurrentPublishError, lambda: store.publish(
        {"model.safetensors": b"c"}, {}, v0.version, expect_latest=v0.version),
        f"names {winner[0]}, expected {v0.version}")
    _raises(ConcurrentPublishError, lambda: store.promote(loser, expect_latest=v0.version))
    store.promote(loser, expect_latest=winner[0])
    _expect(_latest_version(store) == loser, "promote with the right expectation")


def check_verify(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    v1 = store.publish({"model.safetensors": MODEL, "extra.bin": b"x"}, {}, None)
    _expect(store.verify(v1.version).version == v1.version, "verify of a good version")
    key = f"versions/{v1.version}/model.safetensors"
    tamper(key, MODEL[:-1])
    _raises(CheckpointCorruptError, lambda: store.verify(v1.version), key)
    tamper(key, None)
    _raises(CheckpointMissingError, lambda: store.verify(v1.version), key)


def check_opened(store: CheckpointStore, tamper: Tamper, workdir: Path) -> None:
    """``opened`` yields every file verified; a damaged one raises before the block runs;
    a temporary copy (remote stores) is gone after it."""
    v1 = store.publish({"model.safetensors": MODEL, "nested/opt.bin": b"opt"}, {"w": 1}, None)
    with store.opened(v1.version) as (info, folder):
        got = _files_under(folder)
        _expect(info.user_meta == {"w": 1}, f"user_meta {info.user_meta}")
        _expect(got["model.safetensors"] == MODEL and got["nested/opt.bin"] == b"opt",
                f"opened files {sorted(got)}")
    _expect(folder.is_dir() == (store.uri.startswith("file:")),
            f"{folder}: kept after the block (only a local store's own folder is)")
    key = f"versions/{v1.version}/nested/opt.bin"
    tamper(key, b"opt!")
    entered: list[Path] = []

    def open_damaged() -> None:
        with store.opened(v1.version) as (_, damaged):
            entered.append(damaged)

    _raises(CheckpointCorruptError, open_damaged, key)
    _expect(not entered, f"a damaged version was opened: {entered}")


CHECKS: tuple[Check, ...] = (check_round_trip, check_ordering, check_retention,
                             check_atomic_publish, check_load_detects_tampering,
                             check_broken_metadata, check_rejected, check_configs,
                             check_title_vectors,
                             check_key_validation, check_racing_publishers, check_verify,
                             check_opened)
