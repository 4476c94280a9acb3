"""training.heap: the import-time heap is frozen for a stage's run and handed back after."""

from __future__ import annotations

import gc
import os
import sys
import weakref
from pathlib import Path

import pytest

from serving.config import SERVE_START_ENV
from training.cli import LOCAL_RAY_ENV
from training.heap import GC_FREEZE_ENV, frozen_import_heap


class Node:
    """A container that can sit in a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


def _tracked(obj: object) -> bool:
    """Whether the collector's generations (not the permanent one) hold ``obj``."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def _nothing_frozen_before() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_modules_are_imported_and_the_heap_alive_now_is_frozen() -> None:
    sys.modules.pop("colorsys", None)
    before = Node()
    with frozen_import_heap(["colorsys"]) as frozen:
        assert "colorsys" in sys.modules
        assert frozen > 1000 and gc.get_freeze_count() > 1000
        assert not _tracked(before)
        after = Node()
        assert _tracked(after)
    assert gc.get_freeze_count() == 0
    assert _tracked(before)


def test_cycles_made_inside_are_collected_inside() -> None:
    with frozen_import_heap([]):
        node, ref = _cycle()
        del node
        gc.collect()
        assert ref() is None


def test_a_frozen_cycle_dropped_inside_is_collected_after_exit() -> None:
    node, ref = _cycle()
    with frozen_import_heap([]):
        del node
        gc.collect()
        assert ref() is not None  # frozen: the collector skips it while the stage runs
    gc.collect()
    assert ref() is None


def test_an_error_inside_still_unfreezes() -> None:
    with pytest.raises(RuntimeError, match="boom"), frozen_import_heap([]):
        assert gc.get_freeze_count() > 0
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_the_switch_leaves_the_collector_alone(value: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GC_FREEZE_ENV, value)
    sys.modules.pop("colorsys", None)
    with frozen_import_heap(["colorsys"]) as frozen:
        assert frozen == 0
        assert gc.get_freeze_count() == 0
        assert "colorsys" not in sys.modules


def test_the_pipeline_runs_with_the_import_heap_frozen_and_hands_it_back(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ray

    import cluster.pipeline as pipeline

    seen: dict[str, int] = {}

    def fake_run(*_args: object, **_kwargs: object) -> dict[str, object]:
        seen["frozen"] = gc.get_freeze_count()
        return {}

    for name, value in {**LOCAL_RAY_ENV, **SERVE_START_ENV}.items():  # main() sets them
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # no Ray in the unit tier
    monkeypatch.setattr(pipeline, "run", fake_run)
    monkeypatch.setattr(pipeline, "print_outcome", lambda *_args: None)
    assert pipeline.main(["--once", "--serve", "false", "--store", str(tmp_path)]) == 0
    assert seen["frozen"] > 100_000  # torch, transformers and Ray's import-time objects
    assert gc.get_freeze_count() == 0
