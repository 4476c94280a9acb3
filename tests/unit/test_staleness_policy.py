"""A rejected candidate must not freeze the shop: the training head, fallback retrains, and
the staleness table.

No Ray: ``trainer="local"``, a tiny random encoder, a tiny synthetic shop on a local store.
Rejections are forced by replacing the gate's ``decide`` in ``training.update.run``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import training.update.run
from cluster.comparison.arms import STALENESS_FIELDS
from cluster.comparison.staleness import (
    gate_line,
    staleness_markdown,
    staleness_rows,
    staleness_totals,
)
from tests.unit.tiny_shop import RUN_MODEL as MODEL
from tests.unit.tiny_shop import RUN_TRAIN as TRAIN
from tests.unit.tiny_shop import update_config
from training.cli import ConfigError
from training.data.schema import WindowData
from training.data.sources import load_windows
from training.data.split import split_holdout
from training.data.synthetic import SyntheticShopConfig
from training.features.history import PurchaseHistory, purchases
from training.incremental_config import IncrementalConfig
from training.model import load_model
from training.store import open_store
from training.update.gate import GateDecision, decide
from training.update.head import HEAD_CONFIG, TrainingHead, TrainingHeadError, plan_start, read_head
from training.update.prepare import Update, prepare_update
from training.update.run import run_incremental

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

SHOP = SyntheticShopConfig(n_windows=5, interactions_per_window=300,
                           transactions_per_window=150, n_users=60, n_items=40,
                           fraud_rate=0.1)
WINDOWS = load_windows("synthetic", synthetic=SHOP)
IDS = [w.window_id for w in WINDOWS]


def _update(inc: IncrementalConfig, reject: bool = False) -> dict[str, Any]:
    """One run_incremental; ``reject`` forces the gate to say no."""
    if not reject:
        return run_incremental(inc, TRAIN, MODEL, SHOP)

    def no(candidate: dict[str, float], incumbent: dict[str, float] | None,
           tolerance: float, k: int, intervals: object = None) -> GateDecision:
        return GateDecision(False, "forced rejection", candidate, incumbent or {})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.update.run, "decide", no)
        return run_incremental(inc, TRAIN, MODEL, SHOP)


def _prepared(inc: IncrementalConfig, tmp: Path) -> Update:
    """What the next update would start from (nothing is trained or written)."""
    return prepare_update(open_store(inc.store.uri), inc, TRAIN, MODEL, SHOP, tmp)


def _purchase_keys(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    return {(u, i, str(ts)) for u, i, ts in zip(frame["user_id"], frame["item_id"],
                                                frame["ts"])}


def _history_of(windows: list[WindowData]) -> set[tuple[str, str, str]]:
    history = PurchaseHistory(MODEL.history_len)
    for window in windows:
        history = history.update(window.interactions)
    return _purchase_keys(history.frame)


def _n_purchases(windows: list[WindowData]) -> int:
    return sum(len(purchases(w.interactions)) for w in windows)


@pytest.fixture(scope="module")
def advance(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """promote w0 → reject w1 → (what w2's update starts from) → promote w2."""
    root = tmp_path_factory.mktemp("advance")
    inc = update_config(root / "store")
    first = _update(inc)
    rejected = _update(inc, reject=True)
    store = open_store(inc.store.uri)
    latest = store.latest()
    seen = {"latest": latest.version if latest else None,
            "head": store.get_config(HEAD_CONFIG),
            "rejected": store.list_rejected()}
    up = _prepared(inc, root / "prepared")
    incumbent_store = root / "live"
    store.load(first["version"], incumbent_store)
    live_model = load_model(incumbent_store)
    same_incumbent = all(torch.equal(a, b) for a, b in zip(
        up.incumbent.state_dict().values(), live_model.state_dict().values()))  # type: ignore[union-attr]
    after = _update(inc)
    return {"first": first, "rejected": rejected, "seen": seen, "up": up, "after": after,
            "same_incumbent": same_incumbent, "store": store}


def test_rejection_keeps_latest_and_records_the_head(advance: dict[str, Any]) -> None:
    first, rejected, seen = advance["first"], advance["rejected"], advance["seen"]
    assert first["promoted"] and first["kind"] == "incremental"
    assert not rejected["promoted"] and rejected["gate"] == "forced rejection"
    assert rejected["window"] == IDS[1]
    assert rejected["start_from"] == {"version": first["version"], "kind": "live"}
    assert rejected["parent"] == first["version"]  # the published lineage, not the head
    assert (rejected["consecutive_rejections"], rejected["live_version"],
            rejected["live_window"]) == (1, first["version"], IDS[0])
    assert seen["latest"] == first["version"]  # serving keeps the incumbent
    assert seen["rejected"] == [rejected["version"]]
    assert seen["head"] == {"version": rejected["version"], "window": IDS[1],
                            "live_version": first["version"], "consecutive_rejections": 1,
                            "rejections_since_fallback": 1}


def test_next_update_resumes_from_the_rejected_head(advance: dict[str, Any]) -> None:
    up, rejected, first = advance["up"], advance["rejected"], advance["first"]
    assert (up.start.kind, up.start.source, up.start.version) == \
        ("incremental", "rejected_head", rejected["version"])
    assert up.parent is not None and up.parent.info.version == rejected["version"]
    assert up.window.window_id == IDS[2]  # the window after the head's, not after latest's
    # The head's history and replay buffer include the rejected window.
    assert _purchase_keys(up.history.frame) == _history_of(WINDOWS[:2])
    assert up.replay.windows == IDS[:2]
    held = up.replay.frame("interactions")
    assert len(held) == _n_purchases(WINDOWS[:2])
    assert _purchase_keys(purchases(WINDOWS[1].interactions)) <= _purchase_keys(held)
    assert up.parent.optimizer is not None
    # Distillation from the state resumed; the gate against the live model.
    assert up.teacher is not None and advance["same_incumbent"]
    assert up.start.live is not None and up.start.live.version == first["version"]


def test_candidate_from_the_head_is_gated_and_promoted_against_latest(
        advance: dict[str, Any]) -> None:
    after, first, rejected = advance["after"], advance["first"], advance["rejected"]
    assert after["window"] == IDS[2] and after["promoted"]
    assert after["start_from"] == {"version": rejected["version"], "kind": "rejected_head"}
    assert after["parent"] == first["version"]
    assert (after["consecutive_rejections"], after["live_version"], after["live_window"]) == \
        (0, after["version"], IDS[2])
    store = advance["store"]
    assert store.latest().version == after["version"]
    assert store.read_meta(after["version"])["start_from"] == after["start_from"]
    assert store.get_config(HEAD_CONFIG)["version"] == after["version"]
    assert set(STALENESS_FIELDS) <= set(after)


def test_hold_resumes_from_latest_after_a_rejection(tmp_path: Path) -> None:
    inc = update_config(tmp_path / "store", on_reject="hold", fallback_after=0)
    first = _update(inc)
    rejected = _update(inc, reject=True)
    up = _prepared(inc, tmp_path / "prepared")
    assert (up.start.source, up.start.version) == ("live", first["version"])
    assert up.window.window_id == IDS[1]  # today's behaviour: the rejected window again
    assert _purchase_keys(up.history.frame) == _history_of(WINDOWS[:1])
    assert up.replay.windows == IDS[:1]
    again = _update(inc)
    assert again["window"] == IDS[1] and again["promoted"]
    assert again["start_from"] == {"version": first["version"], "kind": "live"}
    assert rejected["consecutive_rejections"] == 1 and again["consecutive_rejections"] == 0


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """promote w0 → reject w1 → reject w2 → fallback retrain on w3 (fit inputs captured)."""
    root = tmp_path_factory.mktemp("fallback")
    inc = update_config(root / "store", fallback_after=2)
    runs = [_update(inc), _update(inc, reject=True), _update(inc, reject=True)]
    fits: list[tuple[Any, ...]] = []
    real_fit = training.update.run.fit_window

    def spy(*args: Any) -> Any:
        fits.append(args)
        return real_fit(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.update.run, "fit_window", spy)
        runs.append(_update(inc))
    return {"runs": runs, "fits": fits, "store": open_store(inc.store.uri), "inc": inc,
            "root": root}


def test_two_rejections_then_a_promoted_fallback_retrain(fallback: dict[str, Any]) -> None:
    first, one, two, retrain = fallback["runs"]
    assert [r["kind"] for r in fallback["runs"]] == ["incremental"] * 3 + ["fallback_retrain"]
    assert [r["consecutive_rejections"] for r in fallback["runs"]] == [0, 1, 2, 0]
    assert two["start_from"] == {"version": one["version"], "kind": "rejected_head"}
    assert retrain["window"] == IDS[3] and retrain["promoted"]
    assert retrain["start_from"] == {"version": None, "kind": "pretrained"}
    assert retrain["parent"] == first["version"]
    assert (retrain["live_version"], retrain["live_window"]) == (retrain["version"], IDS[3])
    store = fallback["store"]
    assert store.latest().version == retrain["version"]
    assert store.get_config(HEAD_CONFIG) == {
        "version": retrain["version"], "window": IDS[3], "live_version": retrain["version"],
        "consecutive_rejections": 0, "rejections_since_fallback": 0}


def test_fallback_trains_fresh_on_every_window_so_far(fallback: dict[str, Any]) -> None:
    (_, _, model, teacher, optimizer, examples, label), = fallback["fits"]
    assert teacher is None and optimizer is None and label == f"fallback-{IDS[3]}"
    train_part, _ = split_holdout(WINDOWS[3], fallback["inc"].continual.holdout_frac)
    assert len(examples.rec) == _n_purchases([*WINDOWS[:3], train_part])
    labelled = sum(int(w.transactions["is_fraud"].notna().sum())
                   for w in [*WINDOWS[:3], train_part])
    assert len(examples.fraud) == labelled
    # Its replay and history include every window, the current one too.
    store, root = fallback["store"], fallback["root"]
    meta = store.load(fallback["runs"][3]["version"], root / "retrain").user_meta
    assert meta["replay"]["windows"] == IDS[:4] and meta["kind"] == "fallback_retrain"
    history = PurchaseHistory.load(root / "retrain" / "history.parquet", MODEL.history_len)
    assert _purchase_keys(history.frame) == _history_of(WINDOWS[:4])


def test_a_rejected_fallback_becomes_the_head_and_restarts_the_count(
        tmp_path: Path) -> None:
    inc = update_config(tmp_path / "store", fallback_after=1)
    _update(inc)
    rejected = _update(inc, reject=True)
    retrain = _update(inc, reject=True)
    assert retrain["kind"] == "fallback_retrain" and not retrain["promoted"]
    assert retrain["consecutive_rejections"] == 2
    head = read_head(open_store(inc.store.uri), open_store(inc.store.uri).latest())
    assert (head.version, head.window, head.rejections_since_fallback) == \
        (retrain["version"], IDS[2], 0)
    start = plan_start(open_store(inc.store.uri), inc)
    assert (start.kind, start.source, start.version, start.after) == \
        ("incremental", "rejected_head", retrain["version"], IDS[2])
    assert rejected["kind"] == "incremental"


def test_full_retrain_makes_every_update_a_gated_retrain(tmp_path: Path) -> None:
    inc = update_config(tmp_path / "store", full_retrain=True)
    first = _update(inc)
    rejected = _update(inc, reject=True)
    again = _update(inc)
    assert [r["kind"] for r in (first, rejected, again)] == ["fallback_retrain"] * 3
    assert all(r["start_from"] == {"version": None, "kind": "pretrained"}
               for r in (first, rejected, again))
    # The gate still decides: a rejected retrain is not served, the next window moves on.
    assert first["promoted"] and not rejected["promoted"] and again["promoted"]
    assert rejected["live_version"] == first["version"]
    assert [r["window"] for r in (first, rejected, again)] == IDS[:3]
    assert again["parent"] == first["version"]
    assert open_store(inc.store.uri).latest().version == again["version"]


def test_head_of_another_latest_or_malformed_is_not_followed(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    info = store.publish({"w.bin": b"x"}, {"window": "2024-01-01"}, parent=None)
    assert read_head(store, info) == TrainingHead(info.version, "2024-01-01", info.version)
    store.put_config(HEAD_CONFIG, {"version": info.version, "window": "2024-01-08",
                                   "live_version": "v20200101T000000000000Z-00000000",
                                   "consecutive_rejections": 3})
    assert read_head(store, info) == TrainingHead(info.version, "2024-01-01", info.version)
    store.put_config(HEAD_CONFIG, {"version": info.version, "consecutive_rejections": -1,
                                   "live_version": info.version})
    with pytest.raises(TrainingHeadError, match="consecutive_rejections"):
        read_head(store, info)


def test_policy_settings_are_validated() -> None:
    defaults = IncrementalConfig().continual
    assert (defaults.on_reject, defaults.fallback_after) == ("advance", 2)
    with pytest.raises(ConfigError, match="on_reject"):
        IncrementalConfig.of(on_reject="freeze")
    with pytest.raises(ConfigError, match="fallback_after"):
        IncrementalConfig.of(fallback_after=-1)


def test_gate_message_names_the_formatted_metric() -> None:
    decision = decide({"rec": 0.1589, "fraud": 0.5}, {"rec": 0.1733, "fraud": 0.5}, 0.01, 20)
    assert not decision.promote
    assert decision.reason == "rec all/ndcg@20 fell 0.1733 -> 0.1589 (tolerance 0.01)"
    assert "{k}" not in decision.reason
    fine = decide({"rec": 0.17, "fraud": math.nan}, {"rec": 0.1733, "fraud": 0.9}, 0.01, 20)
    assert fine.promote


def _row(promoted: bool, live: str, kind: str = "incremental", rejections: int = 0,
         start: str = "live") -> dict[str, Any]:
    return {"incremental": {"promoted": promoted, "kind": kind, "live_window": live,
                            "consecutive_rejections": rejections,
                            "start_from": {"version": "v", "kind": start}}}


RESULT: dict[str, Any] = {
    "windows": ["a", "b", "c", "d", "e", "f"],
    "updates": {"a": _row(True, "a", start="pretrained"),
                "b": _row(False, "a", rejections=1),
                "c": _row(False, "a", rejections=2, start="rejected_head"),
                "d": _row(True, "d", kind="fallback_retrain", start="pretrained"),
                "e": _row(True, "e")}}


def test_staleness_rows_and_totals_exact() -> None:
    rows = staleness_rows(RESULT)
    assert [(r["window"], r["scored_with_live_window"], r["stale_windows"], r["update"])
            for r in rows] == [("a", None, None, "promoted"), ("b", "a", 0, "rejected"),
                               ("c", "a", 1, "rejected"), ("d", "a", 2, "fallback promoted"),
                               ("e", "d", 0, "promoted"), ("f", "e", 0, None)]
    assert [r["start_from"] for r in rows] == ["pretrained", "live", "rejected_head",
                                               "pretrained", "live", None]
    assert [r["live_window_after"] for r in rows] == ["a", "a", "a", "d", "e", "e"]
    assert staleness_totals(RESULT) == {
        "updates": 5, "rejections": 2, "fallbacks": 1, "fallbacks_promoted": 1,
        "incremental_promoted": 2, "incremental_promoted_fraction": 0.4,
        "max_stale_windows": 2, "windows_scored_stale": 2}
    lines = staleness_markdown(RESULT)
    assert lines[2] == "| a | – | – | promoted | pretrained | 0 |"
    assert lines[5] == "| d | a | 2 | fallback promoted | pretrained | 0 |"
    assert lines[-1] == ("5 updates: 2 rejected, 1 fallback retrain(s) (1 promoted); the "
                         "incremental candidate itself was promoted on 2 (40%); the live "
                         "model was stale on 2 scored window(s), at most 2 window(s) behind.")


def test_another_gated_methods_rejections_get_one_line() -> None:
    full = {"windows": RESULT["windows"],
            "updates": {w: {"full_retrain": row["incremental"]}
                        for w, row in RESULT["updates"].items()}}
    full["settings"] = {"pipeline": {"arms_gate_tolerance": 0.01}}
    assert gate_line(full, "full_retrain") == [
        "`full_retrain` publishes through the gate at tolerance 0.01 (--arms-gate-tolerance): "
        "5 updates, 2 rejected; its live model was at most 2 window(s) behind.", ""]
    del full["settings"]  # recorded before the setting: the arms passed every candidate
    assert "tolerance 1 (--arms-gate-tolerance) (passes every candidate" in \
        gate_line(full, "full_retrain")[0]
    assert gate_line(RESULT, "full_retrain") == []  # no rows of that method
    # Rows of the ungated arm recorded before (no verdict): no line, not "all rejected".
    legacy = {"windows": ["a", "b"], "updates": {w: {"full_retrain": {"wall_s": 1.0}}
                                                 for w in ("a", "b")}}
    assert gate_line(legacy, "full_retrain") == []


def test_staleness_of_rows_without_the_new_fields_follows_promotions() -> None:
    legacy = {"windows": ["a", "b", "c", "d"],
              "updates": {w: {"incremental": {"promoted": p}}
                          for w, p in zip("abcd", (True, False, False, True))}}
    assert [r["stale_windows"] for r in staleness_rows(legacy)] == [None, 0, 1, 2]
    totals = staleness_totals(legacy)
    assert (totals["rejections"], totals["fallbacks"], totals["incremental_promoted_fraction"],
            totals["max_stale_windows"]) == (2, 0, 0.5, 2)


def test_the_gate_scores_the_unseen_tail_unless_asked_for_replay_rows() -> None:
    """The incumbent trained on every replayed row, so by default the gate's slice is the
    held-out tail of the new window only (unseen by both models)."""
    from types import SimpleNamespace

    from tests.unit.test_replay import make_window
    from training.features.replay import ReplayBuffer
    from training.update.run import gate_slice

    replay = ReplayBuffer(capacity=100, seed=1)
    replay.add_window(make_window("old", n_purchases=20))
    tail = make_window("new", n_purchases=4, start=100)
    up = SimpleNamespace(kind="incremental", replay=replay, holdout=tail,
                         mixed=make_window("mix", n_purchases=1))
    assert gate_slice(up, 0, with_replay=False) is tail
    both = gate_slice(up, 0, with_replay=True)  # type: ignore[arg-type]
    users = set(both.interactions["user_id"])
    assert len(both.interactions) == 8 and any(u.startswith("old-") for u in users)
    up.kind = "fallback_retrain"
    assert gate_slice(up, 0, with_replay=True) is tail  # type: ignore[arg-type]
