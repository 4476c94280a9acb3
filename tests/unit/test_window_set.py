"""An update reads only the windows it needs from a folder of windows (#13: no whole-history
loads), and :class:`WindowSet` reads each window on first use.

No Ray: ``trainer="local"``, a tiny random encoder, a tiny synthetic shop on local disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.tiny_shop import RUN_MODEL as MODEL
from tests.unit.tiny_shop import RUN_TRAIN as TRAIN
from training.data.labels import labels_arrived
from training.data.schema import WindowData
from training.data.source_config import SourceError
from training.data.sources import load_windows
from training.data.split import choose_window
from training.data.synthetic import SyntheticShopConfig, generate
from training.data.window_set import WindowSet, window_ids
from training.data.windows import write_window
from training.incremental_config import IncrementalConfig
from training.store import open_store
from training.update.prepare import prepare_update
from training.update.run import run_incremental

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

SHOP = SyntheticShopConfig(n_windows=5, interactions_per_window=300,
                           transactions_per_window=150, n_users=60, n_items=40,
                           fraud_rate=0.1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("windows")
    for window in generate(SHOP).windows:
        write_window(root, window, SHOP.freq, source="synthetic")
    return root


def test_a_folder_is_listed_without_reading_and_read_once_per_window(folder: Path) -> None:
    windows = load_windows("windows", str(folder))
    ids = window_ids(windows)
    assert len(ids) == 5 and windows.reads == []
    third = windows[2]
    assert third.window_id == ids[2] and len(third.interactions) > 0
    assert windows.get(ids[2]) is third and windows.reads == [ids[2]]
    part = windows[1:4]
    assert isinstance(part, WindowSet) and list(part.ids) == ids[1:4]
    assert part[1] is third and windows.reads == [ids[2]]  # a slice shares the cache
    assert [w.window_id for w in windows] == ids and len(windows.reads) == 5


def test_the_cache_keeps_only_the_last_few_windows() -> None:
    read: list[str] = []

    def reader(wid: str) -> WindowData:
        read.append(wid)
        return WindowData(window_id=wid)

    windows = WindowSet(["a", "b", "c"], reader, keep=2)
    for wid in ("a", "b", "a", "c", "a"):
        windows.get(wid)
    assert read == ["a", "b", "c"] and windows.reads == read
    windows.get("b")  # evicted by "c": "a" was used after it
    assert read == ["a", "b", "c", "b"]
    with pytest.raises(ValueError, match="keep"):
        WindowSet(["a"], reader, keep=0)
    with pytest.raises(KeyError, match="'z'"):
        windows.position("z")


def test_the_label_delay_reads_only_the_window_whose_labels_arrived(folder: Path) -> None:
    windows = load_windows("windows", str(folder))
    ids = window_ids(windows)
    seen = labels_arrived(windows, choose_window(windows, ids[3], None), 2, tail_frac=0.0)
    assert windows.reads == [ids[3], ids[1]]
    assert seen.transactions.equals(windows[1].transactions)


def test_an_update_reads_its_window_and_its_parents_only(folder: Path,
                                                          tmp_path: Path) -> None:
    inc = IncrementalConfig.of(source="windows", path=str(folder), store=str(tmp_path / "s"),
                            trainer="local", use_best_config=False, gate_tolerance=1.0)
    for _ in range(2):
        run_incremental(inc, TRAIN, MODEL)
    ids = list_of(folder)
    up = prepare_update(open_store(inc.store.uri), inc, TRAIN, MODEL, None, tmp_path / "up")
    assert up.window_id == ids[2] and up.parent is not None
    # The new window and the parent's (its held-out tail is carried); never 0, 3 or 4.
    assert up.windows.reads == [ids[2], ids[1]]
    # The tables went before the examples were built: asked for, the same two are read again.
    assert up.window.window_id == ids[2]
    assert up.windows.reads == [ids[2], ids[1]] * 2
    assert up.next_window() is not None and up.windows.reads[-1] == ids[3]


def list_of(folder: Path) -> list[str]:
    return window_ids(load_windows("windows", str(folder)))


def test_windows_without_a_length_are_refused_before_an_update(folder: Path,
                                                               tmp_path: Path) -> None:
    """The fraud trees' history flags are read as of each row's own window; windows that do
    not say their length would have every row read today's history, so nothing trains."""
    import json
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    meta = bare / list_of(folder)[0] / "_window.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items()
                                if k != "freq"}))
    with pytest.raises(SourceError, match="freq: .*does not say its window length"):
        load_windows("windows", str(bare))
    held = WindowSet.of(generate(SHOP).windows)  # in memory, no freq given
    inc = IncrementalConfig.of(source="windows", path=str(folder), store=str(tmp_path / "s"),
                               trainer="local", use_best_config=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(inc.source), "load", lambda self, synthetic=None: held)
        with pytest.raises(SourceError, match="freq: the windows of .* do not say their length"):
            prepare_update(open_store(inc.store.uri), inc, TRAIN, MODEL, None, tmp_path / "up")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
