"""shopstream-versions on a local store: list, show, diff, promote (refusing a corrupt
version), rollback and gc, in text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.store import LocalStore
from training.store.versions import main

pytestmark = pytest.mark.unit


def _meta(window: str, rec: float, reason: str = "no task dropped") -> dict:
    return {"window": window, "kind": "incremental", "config_used": "flags/defaults",
            "gate": {"promote": True, "reason": reason, "candidate": {"rec": rec, "fraud": 0.5},
                     "incumbent": {"rec": rec - 0.01, "fraud": 0.5}},
            "metrics": {"candidate": {"main": {"rec": rec, "fraud": 0.5}}},
            "train_config": {"lr": 0.002}}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    v1 = store.publish({"model.safetensors": b"1" * 2048}, _meta("w1", 0.2), None)
    v2 = store.publish({"model.safetensors": b"2" * 2048}, _meta("w2", 0.25), v1.version)
    store.record_rejected({"model.safetensors": b"3"}, _meta("w3", 0.1), v2.version,
                          reason="rec fell 0.25 -> 0.10")
    return store


def _run(store: LocalStore, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--store", str(store.root), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_list_shows_status_lineage_and_main_metrics(store: LocalStore,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(store, capsys, "--json", "list")
    rows = json.loads(out)
    assert code == 0 and [r["status"] for r in rows] == ["published", "latest", "rejected"]
    assert [r["window"] for r in rows] == ["w1", "w2", "w3"]
    assert rows[1]["parent"] == rows[0]["version"] and rows[1]["rec"] == 0.25
    assert rows[2]["gate"] == "rec fell 0.25 -> 0.10"
    code, text = _run(store, capsys, "list", "--published-only")
    assert code == 0 and text.splitlines()[0].split()[:3] == ["version", "status", "parent"]
    assert len(text.splitlines()) == 3 and "rejected" not in text


def test_show_and_diff(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = store.list_versions()
    code, out = _run(store, capsys, "show", v2)
    doc = json.loads(out)
    assert code == 0 and doc["gate"]["reason"] == "no task dropped"
    assert doc["train_config"] == {"lr": 0.002} and doc["files"] == {"model.safetensors": 2048}
    code, out = _run(store, capsys, "--json", "diff", v1, v2)
    rows = {r["metric"]: r for r in json.loads(out)}
    assert rows["metrics.candidate.main.rec"]["delta"] == pytest.approx(0.05)
    assert rows["gate.candidate.fraud"]["delta"] == 0.0


def test_promote_refuses_a_corrupt_version_and_rollback_goes_to_the_parent(
        store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = store.list_versions()
    model = store.root / "versions" / v1 / "model.safetensors"
    model.write_bytes(b"1" * 2047)
    code, out = _run(store, capsys, "promote", v1)
    assert code == 1 and "CheckpointCorruptError" in out and "model.safetensors" in out
    assert store.latest().version == v2  # type: ignore[union-attr]
    code, out = _run(store, capsys, "rollback")
    assert code == 1 and store.latest().version == v2  # type: ignore[union-attr]
    model.write_bytes(b"1" * 2048)
    code, out = _run(store, capsys, "rollback")
    assert code == 0 and out.strip() == f"latest: {v2} -> {v1}"
    code, out = _run(store, capsys, "rollback")
    assert code == 1 and "has no parent" in out
    code, out = _run(store, capsys, "--json", "promote", v2)
    assert code == 0 and json.loads(out) == {"previous": v1, "latest": v2}
    rejected = store.list_rejected()[0]
    code, out = _run(store, capsys, "promote", rejected)
    assert code == 1 and "CheckpointMissingError" in out  # rejected ones are not promotable


def test_gc_keeps_latest_and_its_parent(store: LocalStore,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = store.list_versions()
    v3 = store.publish({"m": b"4"}, _meta("w4", 0.3), v2).version
    code, out = _run(store, capsys, "--json", "gc", "--keep", "1")
    assert code == 0 and json.loads(out)["deleted"] == [v1]
    assert store.list_versions() == [v2, v3]


def test_bad_arguments_name_the_setting(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", "ftp://host/x", "list"]) == 2
    assert "ftp" in capsys.readouterr().err
    assert main(["--store", str(tmp_path), "gc", "--keep", "0"]) == 2
    assert "keep_last" in capsys.readouterr().err
