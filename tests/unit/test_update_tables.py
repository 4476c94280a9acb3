"""An update lets its window's tables go while the model trains and reads them again for
the gate (issue #13): the same tables, from the same files and the same replay sample.

No Ray: ``trainer="local"``, a tiny random encoder, a tiny synthetic shop written to a
windows folder (so a second read comes from disk, as a user's windows do).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.unit.tiny_shop import RUN_MODEL as MODEL
from tests.unit.tiny_shop import RUN_TRAIN as TRAIN
from training.data.synthetic import SyntheticShopConfig, generate
from training.data.windows import write_window
from training.incremental_config import IncrementalConfig
from training.store import open_store
from training.update.prepare import Update, WindowTables, prepare_update
from training.update.run import run_incremental

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

SHOP = SyntheticShopConfig(n_windows=3, interactions_per_window=300,
                           transactions_per_window=200, n_users=60, n_items=40,
                           fraud_rate=0.15)
TABLES = ("window", "train_part", "holdout", "mixed")


def copies(tables: WindowTables) -> dict[str, dict[str, pd.DataFrame]]:
    return {name: {table: getattr(getattr(tables, name), table).copy()
                   for table in ("items", "interactions", "transactions")}
            for name in TABLES}


def assert_same(up: Update, before: dict[str, dict[str, pd.DataFrame]]) -> None:
    for name, frames in before.items():
        for table, frame in frames.items():
            pd.testing.assert_frame_equal(getattr(getattr(up, name), table), frame,
                                          obj=f"{name}.{table}")


def test_dropped_tables_are_read_again_the_same_and_never_after_replay_changed(
        tmp_path: Path) -> None:
    folder = tmp_path / "windows"
    windows = generate(SHOP).windows
    for window in windows:
        write_window(folder, window, SHOP.freq, source="synthetic")
    inc = IncrementalConfig.of(source="windows", path=str(folder),
                               store=str(tmp_path / "store"), trainer="local",
                               use_best_config=False, gate_tolerance=1.0, label_delay=1)
    first = run_incremental(inc, TRAIN, MODEL)
    assert first["phases"]["reread"] >= 0.0
    store = open_store(inc.store.uri)
    # The second update has a parent: a replay sample and the parent's carried tail are
    # mixed in, and window 0's labels arrive (label delay 1).
    up = prepare_update(store, inc, TRAIN, MODEL, None, tmp_path / "p1")
    # prepare_update let the tables go before the rec rows were built.
    assert up.held is None and not up.windows.cache
    assert up.window_id == windows[1].window_id
    reads = len(up.windows.reads)
    assert up.parent is not None and len(up.replay)
    assert len(up.windows.reads) == reads  # nothing read until a table is asked for
    assert len(up.mixed.interactions) > len(up.train_part.interactions)
    assert len(up.windows.reads) > reads
    assert len(up.holdout.transactions) > 0
    assert up.held is not None
    # The examples were built from the same tables.
    assert len(up.examples.fraud) == up.mixed.transactions["is_fraud"].notna().sum()
    assert len(up.examples.rec) == (up.mixed.interactions["event"] == "purchase").sum()
    before = copies(up.held)
    reads = len(up.windows.reads)
    up.drop_tables()
    assert up.held is None and not up.windows.cache
    assert_same(up, before)
    assert len(up.windows.reads) > reads  # from disk again, not from memory
    # Once the window joins the replay buffer, a rebuild would mix another sample.
    up.replay.add_window(up.window)
    up.drop_tables()
    with pytest.raises(RuntimeError, match="replay buffer changed"):
        _ = up.mixed
    # The update itself runs end to end with the tables dropped during its fit.
    second = run_incremental(inc, TRAIN, MODEL)
    assert second["window"] == windows[1].window_id
