"""Everything one incremental update starts from, prepared the same way for every caller.

``training.incremental`` (Ray Train) and ``tuning.sweep`` (one trial per config) both
begin with :func:`prepare_update`, so a sweep tunes exactly the update it will feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.config import TrainConfig
from training.data.labels import known_at, labels_arrived, split_arrived
from training.data.schema import WindowData
from training.data.sources import merge_windows
from training.data.split import choose_window
from training.data.synthetic import SyntheticShopConfig
from training.data.window_set import WindowSet, window_ids
from training.features.examples import WindowExamples
from training.features.history import PurchaseHistory
from training.features.replay import ReplayBuffer
from training.fit.loop import init_model, prepare_window
from training.incremental_config import IncrementalConfig
from training.model import (
    ModelConfig,
    ShopStreamModel,
    load_model,
    model_from_state,
    model_state,
)
from training.store import CheckpointStore
from training.update.bundle import Parent, load_parent
from training.update.head import FALLBACK, START_HEAD, StartPoint, plan_start


@dataclass
class Update:
    """The parent version, the new window split for training/gate, and the start model."""

    parent: Parent | None
    windows: WindowSet
    window: WindowData
    train_part: WindowData
    holdout: WindowData
    replay: ReplayBuffer
    history: PurchaseHistory
    model: ShopStreamModel
    teacher: ShopStreamModel | None
    mixed: WindowData
    vocab: dict[str, int]
    examples: WindowExamples
    # Where the state came from (the head, latest, or nothing: a fallback retrain) and the
    # live model the gate compares against (None for the very first version).
    start: StartPoint
    incumbent: ShopStreamModel | None

    @property
    def kind(self) -> str:
        return self.start.kind

    def unlabelled_transactions(self) -> pd.DataFrame:
        """The new window's own transactions, labels removed: under a label delay the
        update learns fraud from an older window's, and these, scored but not labelled,
        show today's score distribution."""
        own = self.windows[self.windows.position(self.window.window_id)].transactions
        return own.assign(is_fraud=None)

    def next_window(self) -> WindowData | None:
        """The window after the one being trained (validation for sweeps), if any."""
        pos = self.windows.position(self.window.window_id)
        return self.windows[pos + 1] if pos + 1 < len(self.windows) else None


def start_model(parent: Parent | None, model_cfg: ModelConfig, train_part: WindowData
                ) -> tuple[ShopStreamModel, ShopStreamModel | None]:
    """(student to train, frozen teacher = previous version or None)."""
    if parent is None:
        return init_model(model_cfg, train_part), None
    teacher = parent.model.eval()
    return model_from_state(*model_state(teacher)).train(), teacher


def carried_tail(windows: Sequence[WindowData], parent: Parent | None, window: WindowData,
                 holdout_frac: float, label_delay: int = 0) -> WindowData | None:
    """The parent window's held-out tail (as that update saw it: labels that had arrived),
    if the source still has it.

    The previous update only scored its gate on that tail; training on it now means no
    row is wasted, and the most recent rows before the new window are the ones that
    predict it best.
    """
    if parent is None or parent.window is None or parent.window == window.window_id:
        return None
    ids = window_ids(windows)
    if parent.window not in ids:
        return None
    arrived = labels_arrived(windows, windows[ids.index(parent.window)], label_delay,
                             tail_frac=holdout_frac)
    return split_arrived(windows, arrived, label_delay, holdout_frac)[1]


def with_rows(window: WindowData, extra: WindowData | None) -> WindowData:
    """``window`` (its id kept) plus the rows of ``extra``."""
    if extra is None:
        return window
    merged = merge_windows([extra, window])
    return WindowData(window.window_id, merged.items, merged.interactions,
                      merged.transactions)


def prepare_update(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                   model_cfg: ModelConfig, synthetic: SyntheticShopConfig | None,
                   directory: Path) -> Update:
    """Load the training head (or latest, or start fresh), pick and split the window after
    it, mix replay, build examples; a fallback retrain after too many rejections."""
    windows = inc.source.load(synthetic)
    start = plan_start(store, inc)
    window = labels_arrived(windows, choose_window(windows, inc.window, start.after),
                            inc.continual.label_delay, tail_frac=inc.continual.holdout_frac)
    if start.kind == FALLBACK:
        return prepare_fallback(store, inc, train_cfg, model_cfg, windows, window, start)
    train_part, holdout = split_arrived(windows, window, inc.continual.label_delay,
                                        inc.continual.holdout_frac)
    parent = None if start.version is None else load_parent(
        store, directory / "parent", model_cfg.history_len, inc.continual.replay_capacity,
        train_cfg.seed, start.version)
    replay = parent.replay if parent else \
        ReplayBuffer(inc.continual.replay_capacity, train_cfg.seed)
    history = parent.history if parent else PurchaseHistory(model_cfg.history_len)
    model, teacher = start_model(parent, model_cfg, train_part)
    mixed = replay.mix(train_part, inc.continual.replay_ratio, train_cfg.seed)
    if inc.continual.carry_holdout:
        mixed = with_rows(mixed, carried_tail(windows, parent, window, inc.continual.holdout_frac,
                                              inc.continual.label_delay))
    vocab = prepare_window(model, mixed)
    # Repeat features are built when the fit needs them: whole for an in-process fit, a
    # group of users at a time while the Ray path writes each rank's file.
    examples = WindowExamples.build(model, mixed, history, defer_repeat=True)
    incumbent = load_incumbent(store, start) if start.source == START_HEAD else teacher
    return Update(parent, windows, window, train_part, holdout, replay, history, model,
                  teacher, mixed, vocab, examples, start, incumbent)


def load_incumbent(store: CheckpointStore, start: StartPoint) -> ShopStreamModel | None:
    """The live model the candidate must not fall behind."""
    if start.live is None:
        return None
    with store.opened(start.live.version, prefix="shopstream-incumbent-") as (_, folder):
        return load_model(folder).eval()


def full_retrain_start(model_cfg: ModelConfig, windows: Sequence[WindowData]
                       ) -> tuple[WindowData, ShopStreamModel, WindowExamples]:
    """(the windows merged, a fresh pretrained-encoder model fitted to them, its examples):
    what a full retrain trains on. Each window's rows are built against the history as of
    that window's start (point-in-time repeat features), starting from an empty history."""
    windows = list(windows)
    merged = merge_windows(windows)
    model = init_model(model_cfg, merged)
    examples = WindowExamples.build_over(model, windows, PurchaseHistory(model_cfg.history_len),
                                         defer_repeat=True)
    return merged, model, examples


def prepare_fallback(store: CheckpointStore, inc: IncrementalConfig, train_cfg: TrainConfig,
                     model_cfg: ModelConfig, windows: WindowSet, window: WindowData,
                     start: StartPoint) -> Update:
    """A full retrain on every window before ``window`` plus its training part (the
    held-out tail stays for the gate); replay and history are rebuilt from those windows,
    as the chain of incremental updates would have built them."""
    train_part, holdout = split_arrived(windows, window, inc.continual.label_delay,
                                        inc.continual.holdout_frac)
    prior = known_at(windows[:windows.position(window.window_id) + 1],
                     inc.continual.label_delay, tail_frac=inc.continual.holdout_frac)[:-1]
    mixed, model, examples = full_retrain_start(model_cfg, [*prior, train_part])
    replay = ReplayBuffer(inc.continual.replay_capacity, train_cfg.seed)
    history = PurchaseHistory(model_cfg.history_len)
    for old in prior:
        replay.add_window(old)
        history = history.update(old.interactions)
    return Update(None, windows, window, train_part, holdout, replay, history, model, None,
                  mixed, {}, examples, start, load_incumbent(store, start))
