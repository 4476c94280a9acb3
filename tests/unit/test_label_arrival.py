"""Labels that arrive before the label delay: ``label_ts`` (an early chargeback, an
investigated alert) and the pipeline's simulated analyst queue (``--investigated-share``).

Each label arrives once, never before its ``label_ts`` and never after the delay horizon.
No Ray: the pipeline run uses the in-process trainer and a tiny random encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cluster.comparison.fraud_intervals import fraud_table
from cluster.investigations import investigate
from cluster.pipeline_config import PipelineConfig
from cluster.runner import Pipeline
from training.cli import ConfigError
from training.config import TrainConfig
from training.data.labels import LabelArrivalError, known_at, labels_arrived, split_arrived
from training.data.schema import LABEL_TS_COLUMN, WindowData
from training.data.sources import load_windows, merge_windows
from training.data.synthetic import SyntheticShopConfig, generate
from training.data.validate import validate
from training.data.window_set import WindowSet
from training.data.windows import (
    list_windows,
    read_window,
    read_window_meta,
    rewrite_window,
    window_bounds,
    write_window,
)
from training.incremental_config import IncrementalConfig
from training.model import ModelConfig

pytestmark = pytest.mark.unit

SHOP = SyntheticShopConfig(n_windows=4, interactions_per_window=300,
                           transactions_per_window=200, n_users=60, n_items=40,
                           fraud_rate=0.15)
DAY = pd.Timedelta(days=1)


def with_label_times(window: WindowData, times: list[pd.Timestamp | None]) -> WindowData:
    """``window`` with ``label_ts`` set row by row (None: at the delay) for the first rows."""
    txns = window.transactions.copy()
    when = pd.Series(pd.NaT, index=txns.index, dtype="datetime64[us, UTC]")
    for i, t in enumerate(times):
        if t is not None:
            when.iloc[i] = t
    txns[LABEL_TS_COLUMN] = when
    return WindowData(window.window_id, window.items, window.interactions, txns)


def shop_with_label_times() -> tuple[WindowSet, dict[str, int]]:
    """Four weekly windows; window 1's first four rows: a label within window 1, one in
    window 2, one after the delay-2 horizon (window 4, not in the source), one at the delay.
    Returns the windows and {txn_id: the window position its label must arrive at}."""
    plain = list(load_windows("synthetic", synthetic=SHOP))
    end1 = window_bounds(plain[1].window_id, "week")[1]
    ts = plain[1].transactions["ts"]
    times = [ts.iloc[0] + pd.Timedelta(minutes=5), end1 + DAY, end1 + 30 * DAY, None]
    windows = [*plain[:1], with_label_times(plain[1], times), *plain[2:]]
    ids = plain[1].transactions["txn_id"].iloc[:4].tolist()
    return WindowSet.of(windows, freq="week"), dict(zip(ids, [1, 2, 3, 3], strict=True))


def arrivals(windows: WindowSet, delay: int) -> dict[str, int]:
    """{txn_id: position of the update whose window brought its label}."""
    out: dict[str, int] = {}
    for pos, seen in enumerate(known_at(windows, delay, tail_frac=0.0)):
        for txn in seen.transactions["txn_id"]:
            assert txn not in out, f"{txn} arrived twice"
            out[txn] = pos
    return out


def test_a_label_arrives_once_at_its_label_time_and_never_after_the_horizon() -> None:
    windows, expected = shop_with_label_times()
    got = arrivals(windows, 2)
    for txn, pos in expected.items():
        assert got[txn] == pos, txn
    # Every other row of windows 0 and 1 comes at the horizon (2 windows on); nothing of
    # windows 2 and 3 has arrived by the end of the source (window 3).
    for pos in (0, 1):
        for txn in windows[pos].transactions["txn_id"]:
            assert got[txn] == expected.get(txn, pos + 2)
    assert len(got) == len(windows[0].transactions) + len(windows[1].transactions)
    # Nothing before its label time: every row known at update t arrived by the end of t.
    for pos, seen in enumerate(known_at(windows, 2, tail_frac=0.0)):
        end = window_bounds(windows.ids[pos], "week")[1]
        assert LABEL_TS_COLUMN not in seen.transactions
        assert (seen.transactions["ts"] < end).all()
    # Delay 0: labels come with the window, whatever label_ts says.
    assert labels_arrived(windows, windows[1], 0, tail_frac=0.0) is windows[1]


def test_the_held_out_tail_is_all_of_window_t_minus_d_s_last_part_and_early_labels_train(
        ) -> None:
    # Every fraud's chargeback comes a minute after the payment: early labels are frauds.
    plain = list(load_windows("synthetic", synthetic=SHOP))
    quick = []
    for window in plain:
        txns = window.transactions
        times = [ts + pd.Timedelta(minutes=1) if fraud else None
                 for ts, fraud in zip(txns["ts"], txns["is_fraud"], strict=True)]
        quick.append(with_label_times(window, times))
    windows, frac = WindowSet.of(quick, freq="week"), 0.2
    seen = known_at(windows, 1, tail_frac=frac)
    train0, hold0 = split_arrived(windows, seen[0], 1, frac)
    assert len(hold0.transactions) == 0 and train0.transactions["is_fraud"].all()
    tail_frauds = 0
    for pos in range(1, len(windows)):
        train, hold = split_arrived(windows, seen[pos], 1, frac)
        horizon = windows[pos - 1].transactions
        tail = horizon[horizon["ts"] >= horizon["ts"].quantile(1 - frac)]
        # The tail is all of the last fifth of window t - 1, frauds at their true rate ...
        assert set(hold.transactions["txn_id"]) == set(tail["txn_id"])
        tail_frauds += int(hold.transactions["is_fraud"].sum())
        # ... and none of it was learned at an earlier update.
        earlier = set().union(*(set(s.transactions["txn_id"]) for s in seen[:pos]))
        assert earlier.isdisjoint(hold.transactions["txn_id"])
        # Window t's frauds outside its own future tail train now.
        own = windows[pos].transactions
        quick_frauds = own[own["is_fraud"].astype(bool)
                           & (own["ts"] < own["ts"].quantile(1 - frac))]
        assert set(quick_frauds["txn_id"]) <= set(train.transactions["txn_id"])
    assert tail_frauds > 0
    # Without label times the split is the horizon window's tail by time, as before.
    bare = WindowSet.of(plain, freq="week")
    _, hold = split_arrived(bare, labels_arrived(bare, plain[2], 1, tail_frac=frac), 1, frac)
    old = plain[1].transactions
    assert set(hold.transactions["txn_id"]) == set(
        old[old["ts"] >= old["ts"].quantile(1 - frac)]["txn_id"])


def test_label_times_need_the_windows_freq() -> None:
    windows, _ = shop_with_label_times()
    with pytest.raises(LabelArrivalError, match="label_ts"):
        labels_arrived(list(windows), windows[2], 1, tail_frac=0.0)
    assert len(labels_arrived(list(windows), windows[2], 1, freq="week",
                              tail_frac=0.0).transactions) > 0


def test_a_stored_window_keeps_label_times_and_blank_ones_are_not_bad_rows(
        tmp_path: Path) -> None:
    windows, expected = shop_with_label_times()
    plain = WindowData(windows[1].window_id, windows[1].items, windows[1].interactions,
                       windows[1].transactions.drop(columns=[LABEL_TS_COLUMN]))
    bad = pd.DataFrame({"txn_id": ["x"], "reason": ["bad_type"]})
    write_window(tmp_path, plain, "week", source="shop", quarantine=bad)
    # Adding label times to a stored window keeps its freq, source and quarantine.
    rewrite_window(tmp_path, windows[1])
    meta = read_window_meta(tmp_path, windows[1].window_id)
    assert (meta["freq"], meta["source"], meta["quarantine_counts"]) == \
        ("week", "shop", {"bad_type": 1})
    back = read_window(tmp_path, windows[1].window_id)
    assert back.transactions[LABEL_TS_COLUMN].notna().sum() == 3
    assert LABEL_TS_COLUMN not in back.fraud_features
    raw = windows[1].transactions.head(3).astype({LABEL_TS_COLUMN: "str"})
    raw.loc[raw.index[1], LABEL_TS_COLUMN] = "yesterday-ish"
    raw.loc[raw.index[2], LABEL_TS_COLUMN] = ""
    result = validate("transactions", raw)
    assert result.counts.get("bad_type") == 1 and len(result.valid) == 2
    assert result.valid[LABEL_TS_COLUMN].isna().tolist() == [False, True]


def test_the_synthetic_shop_emits_chargeback_times_for_frauds_only() -> None:
    cfg = SyntheticShopConfig(n_windows=2, interactions_per_window=200,
                              transactions_per_window=400, fraud_rate=0.1, chargeback_days=3)
    txns = generate(cfg).windows[1].transactions
    fraud = txns["is_fraud"].astype(bool)
    assert txns.loc[~fraud, LABEL_TS_COLUMN].isna().all()
    lag = (txns.loc[fraud, LABEL_TS_COLUMN] - txns.loc[fraud, "ts"]) / DAY
    assert (lag > 0).all() and 1.0 < lag.mean() < 6.0
    # Its own random stream: every other column is what the shop emits without it.
    plain = generate(SyntheticShopConfig(**{**cfg.__dict__, "chargeback_days": 0.0}))
    pd.testing.assert_frame_equal(plain.windows[1].transactions,
                                  txns.drop(columns=[LABEL_TS_COLUMN]))
    with pytest.raises(ConfigError, match="chargeback_days"):
        SyntheticShopConfig(chargeback_days=-1.0)


def test_the_investigated_queue_is_the_top_share_by_score() -> None:
    window = load_windows("synthetic", synthetic=SHOP)[1]
    labels = window.transactions["is_fraud"].astype(bool).to_numpy()
    scores = np.linspace(0.0, 1.0, len(labels))  # the last rows rank first
    marked, summary = investigate(window, labels, scores, 0.05)
    k = int(np.ceil(0.05 * len(labels)))
    when = marked.transactions[LABEL_TS_COLUMN]
    assert when.notna().sum() == k and when.iloc[-k:].notna().all()
    assert (when.iloc[-k:] == marked.transactions["ts"].iloc[-k:]).all()
    assert summary == {"share": 0.05, "labelled": len(labels), "investigated": k,
                       "frauds_confirmed": int(labels[-k:].sum()),
                       "frauds": int(labels.sum())}
    # An earlier label time stays; a later one is brought forward to the payment.
    early = with_label_times(window, [window.transactions["ts"].iloc[0] - DAY])
    again, _ = investigate(early, labels, scores[::-1], 0.05)
    assert again.transactions[LABEL_TS_COLUMN].iloc[0] == early.transactions[
        LABEL_TS_COLUMN].iloc[0]
    with pytest.raises(ValueError, match="scores"):
        investigate(window, labels, scores[:-1], 0.05)


def test_a_queue_of_equal_scores_is_a_random_sample_not_the_first_rows() -> None:
    window = load_windows("synthetic", synthetic=SHOP)[1]
    labels = window.transactions["is_fraud"].astype(bool).to_numpy()
    flat = np.full(len(labels), 0.04)  # a live model that has learned no fraud yet
    marked, summary = investigate(window, labels, flat, 0.1)
    picked = np.flatnonzero(marked.transactions[LABEL_TS_COLUMN].notna().to_numpy())
    k = summary["investigated"]
    assert len(picked) == k and k >= 10
    assert picked.max() >= len(labels) // 2 and picked.min() < len(labels) // 2
    again, _ = investigate(window, labels, flat, 0.1)
    pd.testing.assert_frame_equal(again.transactions, marked.transactions)
    # Among equal top scores only: a higher score still always comes first.
    scores = flat.copy()
    scores[-3:] = 0.9
    top3 = investigate(window, labels, scores, 3 / len(labels))[0]
    assert top3.transactions[LABEL_TS_COLUMN].notna().to_numpy()[-3:].all()


def test_the_pipeline_writes_the_queue_into_the_windows_every_method_reads(tmp_path: Path) -> None:
    shop = SyntheticShopConfig(n_windows=3, interactions_per_window=200,
                               transactions_per_window=200, n_users=60, n_items=30,
                               fraud_rate=0.1)
    cfg = PipelineConfig(report_dir=str(tmp_path / "report"), work_dir=str(tmp_path / "work"),
                         serve=False, once=True, forgetting=False, investigated_share=0.1,
                         methods=("incremental", "hist_gradient_boosting"))
    inc = IncrementalConfig.of(source="synthetic", store=str(tmp_path / "store"),
                               trainer="local", storage_path=str(tmp_path / "ray"),
                               use_best_config=False, gate_tolerance=1.0, label_delay=1)
    model = ModelConfig(encoder_init="tiny_random", dim=16, history_len=3)
    train = TrainConfig(epochs=1, batch_size=64, n_negatives=16)
    with pytest.raises(ConfigError, match="investigated_share"):
        Pipeline(cfg, inc.with_settings(label_delay=0),
                 train, model, shop)
    pipeline = Pipeline(cfg, inc, train, model, shop)
    result = pipeline.run()
    ids = result["windows"]
    assert list(result["investigated"]) == ids[1:]
    stored = WindowSet.from_folder(pipeline.folder)
    assert list_windows(pipeline.folder) == ids and stored.freq == "week"
    queued = stored[1].transactions
    picked = queued[queued[LABEL_TS_COLUMN].notna()]
    assert len(picked) == result["investigated"][ids[1]]["investigated"] == 20
    assert (picked[LABEL_TS_COLUMN] == picked["ts"]).all()
    # Window 1's update learned its queue and window 0's transactions; window 2's, the
    # rest of window 1 and its own queue: each label once.
    at1 = set(labels_arrived(stored, stored[1], 1, tail_frac=0.0).transactions["txn_id"])
    assert at1 == set(picked["txn_id"]) | set(stored[0].transactions["txn_id"])
    known = merge_windows(known_at(stored, 1, tail_frac=0.0)).transactions["txn_id"]
    assert not known.duplicated().any()
    # The report's fraud section says what the queue found (no plots: the table alone).
    assert "Investigated alerts (`--investigated-share 0.1`)" in "\n".join(fraud_table(result))
