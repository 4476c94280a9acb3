"""--label-delay: an update learns, replays and gates fraud only on labels that have arrived.

No Ray: ``trainer="local"``, a tiny random encoder, a tiny synthetic shop on a local store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.tiny_shop import RUN_MODEL as MODEL
from tests.unit.tiny_shop import RUN_TRAIN as TRAIN
from training.cli import ConfigError
from training.data.labels import known_at, labels_arrived
from training.data.schema import WindowData
from training.data.sources import load_windows, merge_windows
from training.data.split import split_holdout
from training.data.synthetic import SyntheticShopConfig
from training.incremental_config import IncrementalConfig
from training.store import open_store
from training.update.prepare import prepare_update
from training.update.run import run_incremental

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

SHOP = SyntheticShopConfig(n_windows=4, interactions_per_window=300,
                           transactions_per_window=200, n_users=60, n_items=40,
                           fraud_rate=0.15)
WINDOWS = load_windows("synthetic", synthetic=SHOP)


def txn_ids(frame: Any) -> set[str]:
    return set(frame["txn_id"])


def test_a_window_brings_the_transactions_whose_labels_arrived() -> None:
    first, second, third = WINDOWS[:3]
    assert labels_arrived(WINDOWS, second, 0, tail_frac=0.0) is second
    early = labels_arrived(WINDOWS, first, 1, tail_frac=0.0)
    assert len(early.transactions) == 0 and early.interactions is first.interactions
    late = labels_arrived(WINDOWS, third, 2, tail_frac=0.0)
    assert txn_ids(late.transactions) == txn_ids(first.transactions)
    assert late.interactions is third.interactions
    assert set(first.items["item_id"]) <= set(late.items["item_id"])
    # Known at the end of window 2 with delay 1: the transactions of windows 0 and 1, once.
    known = merge_windows(known_at(WINDOWS[:3], 1, tail_frac=0.0)).transactions
    assert len(known) == len(first.transactions) + len(second.transactions)
    assert txn_ids(known) == txn_ids(first.transactions) | txn_ids(second.transactions)
    with pytest.raises(ConfigError, match="label_delay"):
        IncrementalConfig.of(label_delay=-1)


def test_no_label_is_used_before_it_arrives_in_training_replay_or_the_gate(
        tmp_path: Path) -> None:
    inc = IncrementalConfig.of(source="synthetic", store=str(tmp_path / "store"),
                            trainer="local", use_best_config=False, gate_tolerance=1.0,
                            label_delay=1)
    store = open_store(inc.store.uri)
    first = prepare_update(store, inc, TRAIN, MODEL, SHOP, tmp_path / "p0")
    # Window 0's labels have not arrived at its end: no fraud row to train or gate on.
    assert len(first.mixed.transactions) == 0 and len(first.holdout.transactions) == 0
    assert len(first.examples.fraud) == 0
    first_summary = run_incremental(inc, TRAIN, MODEL, SHOP)
    # Its fraud head learned nothing: the version scores every transaction alike.
    assert store.read_meta(first_summary["version"])["fraud_calibration"]["kind"] == "constant"
    second = prepare_update(store, inc, TRAIN, MODEL, SHOP, tmp_path / "p1")
    assert second.window.window_id == WINDOWS[1].window_id
    window0 = txn_ids(WINDOWS[0].transactions)
    # The replay buffer kept window 0's interactions but none of its transactions yet.
    assert len(second.replay.frame("transactions")) == 0
    assert len(second.replay.frame("interactions")) > 0
    # Window 1's update trains and gates fraud on window 0's transactions, split by time.
    assert txn_ids(second.mixed.transactions) | txn_ids(second.holdout.transactions) \
        == window0
    assert len(second.holdout.transactions) > 0
    assert second.holdout.transactions["ts"].min() >= second.train_part.transactions["ts"].max()
    assert txn_ids(second.window.transactions).isdisjoint(txn_ids(WINDOWS[1].transactions))
    summary = run_incremental(inc, TRAIN, MODEL, SHOP)
    assert summary["window"] == WINDOWS[1].window_id
    assert summary["fraud_calibration"] != "constant"  # window 0's labels have arrived
    # Its thresholds are placed by window 0's labels, then carried to window 1's scores
    # (scored, never labelled: no label of window 1 is read).
    unlabelled = second.unlabelled_transactions()
    assert txn_ids(unlabelled) == txn_ids(WINDOWS[1].transactions)
    assert unlabelled["is_fraud"].isna().all()
    basis = store.read_meta(summary["version"])["fraud_thresholds"]["basis"]
    assert basis.endswith(f"carried to {len(unlabelled)} newer, unlabelled transactions")
    third = prepare_update(store, inc, TRAIN, MODEL, SHOP, tmp_path / "p2")
    # After window 1's update the reservoir holds window 0's transactions, not window 1's.
    assert txn_ids(third.replay.frame("transactions")) <= window0
    assert txn_ids(third.replay.frame("transactions")).isdisjoint(
        txn_ids(WINDOWS[1].transactions))
    # Window 2's update learns window 1's labels, plus the carried tail of window 0's.
    learned = txn_ids(third.mixed.transactions) | txn_ids(third.holdout.transactions)
    assert learned & txn_ids(WINDOWS[1].transactions)
    assert learned <= window0 | txn_ids(WINDOWS[1].transactions)
    assert txn_ids(third.holdout.transactions) <= txn_ids(WINDOWS[1].transactions)


def test_a_window_with_nothing_arrived_yet_has_nothing_to_hold_out() -> None:
    # A fraud-only source (ULB) under --label-delay: its first window brings no rows at all.
    first = WINDOWS[0]
    empty = WindowData(first.window_id, first.items.iloc[0:0], first.interactions.iloc[0:0],
                       first.transactions.iloc[0:0])
    train, holdout = split_holdout(empty, 0.2, per_table=True)
    assert train is empty and len(holdout.interactions) == len(holdout.transactions) == 0
    with pytest.raises(ConfigError, match="no interactions or transactions"):
        split_holdout(empty, 0.2)  # without label delay an empty window is a mistake
